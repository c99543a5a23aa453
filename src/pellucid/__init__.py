"""pellucid: an open ML data and inference platform you drive from Python.

The SDK lives in `pellucid.client` (User, App, ...), the generated messages in
`pellucid.api.v1`, the errors in `pellucid.errors` and the server in
`pellucid.server`. `pellucid.client(api_key=None, api_address=None)` calls algorithms
(pellucid.client.algo).
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`pellucid.client` on first use, so `import pellucid` stays light."""
    if name == "client":
        import importlib

        return importlib.import_module("pellucid.client")
    raise AttributeError(f"module 'pellucid' has no attribute {name!r}")
