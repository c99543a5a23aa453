"""Hosted data (data://): protos <-> engine types."""

from __future__ import annotations

from pellucid.api import v1
from pellucid.server.engine.hosted_data import ACLS, DataItem
from pellucid.server.grpc.convert import to_timestamp

_ACL_VALUES = {"private": v1.DATA_ACL_PRIVATE, "my_algos": v1.DATA_ACL_MY_ALGOS, "public": v1.DATA_ACL_PUBLIC}
_ACL_NAMES = {value: name for name, value in _ACL_VALUES.items()}
assert set(_ACL_VALUES) == set(ACLS)


def acl_value(acl: str) -> v1.DataAcl.ValueType:
    return _ACL_VALUES.get(acl, v1.DATA_ACL_UNSPECIFIED)


def acl_name(value: int) -> str:
    """The engine's name of an ACL; an unknown number passes through, for the engine to refuse by name."""
    if value == v1.DATA_ACL_UNSPECIFIED:
        return ""
    return _ACL_NAMES.get(value, f"<DataAcl {value}>")  # type: ignore[call-overload]


def data_entry(item: DataItem) -> v1.DataEntry:
    return v1.DataEntry(
        path=item.path,
        name=item.name,
        is_dir=item.is_dir,
        size=item.size,
        last_modified=to_timestamp(item.modified_at) if item.modified_at else None,
        sha256=item.sha256,
        acl=acl_value(item.acl),
    )
