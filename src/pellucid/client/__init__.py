"""The pellucid SDK: resource classes over the generated stubs.

from pellucid.client.user import User
app = User().create_app("my-app")
"""

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

__all__ = ["App", "Dataset", "Hit", "Inputs", "Lister", "Model", "Module", "Runner", "Search", "UploadResult", "User"]
