"""The pellucid SDK: resource classes over the generated stubs.

    from pellucid.client.user import User
    app = User().create_app("my-app")
"""

from pellucid.client.app import App
from pellucid.client.lister import Lister
from pellucid.client.user import User

__all__ = ["App", "Lister", "User"]
