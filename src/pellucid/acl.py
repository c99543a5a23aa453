"""Read permissions of hosted data collections, named as the Algorithmia client names them.

from pellucid.acl import ReadAcl, AclType
client.dir("data://.my/photos").update_permissions(ReadAcl.public)
client.dir("data://.my/photos").get_permissions().read_acl == AclType.public
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["Acl", "AclType", "ReadAcl"]


class AclType(enum.Enum):
    """Who may read a collection (its owner always may; only its owner writes)."""

    public = "user://*"  # any authenticated user
    my_algos = "algo://.my/*"  # the owner and the owner's algorithms (the default of a new collection)
    private = "private"  # the owner only

    @property
    def name_on_server(self) -> str:
        return self.name


@dataclass(frozen=True)
class Acl:
    read_acl: AclType

    def to_api_param(self) -> dict[str, Any]:
        """The reference API's form: {"read": ["user://*"]}, or an empty list for private."""
        return {"read": [] if self.read_acl is AclType.private else [self.read_acl.value]}

    @classmethod
    def from_name(cls, name: str) -> Acl:
        """The ACL the server names `private`, `my_algos` or `public`; ValueError for anything else."""
        try:
            return cls(AclType[name])
        except KeyError:
            raise ValueError(f"unknown ACL {name!r}: expected one of {', '.join(t.name for t in AclType)}") from None


class ReadAcl:
    """Ready-made ACLs: ReadAcl.public, ReadAcl.my_algos, ReadAcl.private."""

    public = Acl(AclType.public)
    my_algos = Acl(AclType.my_algos)
    private = Acl(AclType.private)
