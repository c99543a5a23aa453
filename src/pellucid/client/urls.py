"""Resource URLs: `<base>/<user_id>/<app_id>[/<kind>/<id>[/versions/<version_id>]]`.

`<base>` is any target form (local, local:///dir, grpc://host:port, https://host);
it may be left out, in which case the usual resolution picks the target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pellucid.client.config import parse_target
from pellucid.errors import UserError

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class ResourceUrl:
    base: str
    user_id: str
    app_id: str
    kind: str = ""
    resource_id: str = ""
    version_id: str = ""


def split_url(url: str, kind: str = "") -> ResourceUrl:
    """Split an app URL (kind "") or a resource URL of `kind` (e.g. "models", "datasets")."""
    example = "<base>/<user_id>/<app_id>" + (f"/{kind}/<{kind[:-1]}_id>[/versions/<version_id>]" if kind else "")
    parts = url.strip().rstrip("/").split("/")
    version_id = resource_id = ""
    if kind:
        if len(parts) >= 2 and parts[-2] == "versions":
            version_id = parts[-1]
            parts = parts[:-2]
        if len(parts) < 4 or parts[-2] != kind:
            raise UserError(f"url {url!r} does not look like {example}")
        resource_id = parts[-1]
        parts = parts[:-2]
    if len(parts) < 2:
        raise UserError(f"url {url!r} does not look like {example}")
    base, user_id, app_id = "/".join(parts[:-2]), parts[-2], parts[-1]
    for name, value in (("user_id", user_id), ("app_id", app_id), ("id", resource_id), ("version id", version_id)):
        if value and not _ID.match(value):
            raise UserError(f"url {url!r}: {name} {value!r} is not an id; the url should look like {example}")
    if base:
        try:
            parse_target(base)
        except UserError:
            raise UserError(
                f"url {url!r}: {base!r} is not a pellucid base; the url should look like {example}"
            ) from None
    return ResourceUrl(base, user_id, app_id, kind, resource_id, version_id)
