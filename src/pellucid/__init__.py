"""pellucid: an open ML data and inference platform you drive from Python.

The SDK lives in `pellucid.client` (User, App, ...), the generated messages in
`pellucid.api.v1`, the errors in `pellucid.errors` and the server in
`pellucid.server`.
"""

__version__ = "0.1.0"
