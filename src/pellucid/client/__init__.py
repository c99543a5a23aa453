"""The pellucid SDK: resource classes over the generated stubs.

from pellucid.client.user import User
app = User().create_app("my-app")

The package is also callable: `pellucid.client(api_key=None, api_address=None)` is an
`AlgoClient` (pellucid.client.algo), whatever submodules are imported.
"""

import sys
import types
from typing import Any

from pellucid.client.algo import AlgoClient
from pellucid.client.app import App
from pellucid.client.dataset import Dataset
from pellucid.client.input import Inputs
from pellucid.client.lister import Lister
from pellucid.client.model import Model
from pellucid.client.module import Module
from pellucid.client.runner import Runner
from pellucid.client.search import Hit, Search
from pellucid.client.uploads import UploadResult
from pellucid.client.user import User

__all__ = [
    "AlgoClient",
    "App",
    "Dataset",
    "Hit",
    "Inputs",
    "Lister",
    "Model",
    "Module",
    "Runner",
    "Search",
    "UploadResult",
    "User",
]


class _CallableModule(types.ModuleType):
    """This package's module type: calling it builds an AlgoClient. Importing a submodule sets
    an attribute of the package, never rebinds `pellucid.client`, so the call keeps working."""

    def __call__(self, api_key: str | None = None, api_address: str | None = None, **kwargs: Any) -> AlgoClient:
        return AlgoClient(api_key, api_address, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
