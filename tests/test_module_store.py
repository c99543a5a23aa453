"""The ModuleStore contract, over SQLite and PostgreSQL (the `metadata_uri` fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pellucid.server.records import (
    AppRecord,
    InstalledModuleVersionRecord,
    ModuleRecord,
    ModuleVersionRecord,
    PageQuery,
)
from pellucid.server.storage import Conflict, MetadataStore, open_metadata_store

ALL = PageQuery(limit=100)


@pytest.fixture
def store(metadata_uri: str) -> Iterator[MetadataStore]:
    store = open_metadata_store(metadata_uri)
    for app_id in ("lib", "user-app", "other"):
        store.insert_app(AppRecord(user_id="u", id=app_id, created_at=0, modified_at=0))
    yield store
    store.close()


def version(module_id: str, version_id: str, at: float, **fields: str) -> ModuleVersionRecord:
    return ModuleVersionRecord("u", "lib", module_id, version_id, at, **fields)


def test_modules_and_versions_are_stored_listed_and_deleted(store: MetadataStore) -> None:
    store.insert_module(ModuleRecord("u", "lib", "crop_tools", 1, 1, "crops", {"k": 1}))
    store.insert_module(ModuleRecord("u", "lib", "Other", 2, 2))
    with pytest.raises(Conflict):
        store.insert_module(ModuleRecord("u", "lib", "crop_tools", 3, 3))
    with pytest.raises(LookupError):
        store.insert_module(ModuleRecord("u", "gone", "m", 3, 3))
    assert store.get_module("u", "lib", "crop_tools") == ModuleRecord("u", "lib", "crop_tools", 1, 1, "crops", {"k": 1})
    assert store.get_module("u", "other", "crop_tools") is None
    assert [m.id for m in store.list_modules("u", "lib", "", ALL).items] == ["crop_tools", "Other"]
    assert [m.id for m in store.list_modules("u", "lib", "OTH", ALL).items] == ["Other"]
    assert store.list_modules("u", "lib", "_", ALL).items[0].id == "crop_tools"  # '_' is no wildcard
    first = store.list_modules("u", "lib", "", PageQuery(limit=1))
    assert len(first.items) == 1 and first.next_after is not None
    assert [m.id for m in store.list_modules("u", "lib", "", PageQuery(limit=1, after=first.next_after)).items] == [
        "Other"
    ]

    git = version("crop_tools", "v1", 5, git_url="https://example.com/x.git", git_ref="main", git_commit="a" * 40)
    entry = version("crop_tools", "v2", 6, entry_point="crop_tools.main:run", description="two")
    store.insert_module_version(git)
    store.insert_module_version(entry)
    with pytest.raises(Conflict):
        store.insert_module_version(version("crop_tools", "v1", 7, entry_point="a:b"))
    with pytest.raises(LookupError):
        store.insert_module_version(version("missing", "v1", 7, entry_point="a:b"))
    assert store.get_module_version("u", "lib", "crop_tools", "v1") == git
    assert store.get_module_version("u", "lib", "crop_tools") == entry  # the latest
    assert store.get_module_version("u", "lib", "crop_tools", "v9") is None
    assert store.get_module("u", "lib", "crop_tools").modified_at == 6  # type: ignore[union-attr]
    assert store.list_module_versions("u", "lib", "crop_tools", ALL).items == [git, entry]
    with pytest.raises(LookupError):
        store.list_module_versions("u", "lib", "missing", ALL)

    assert store.delete_module("u", "lib", "crop_tools")
    assert not store.delete_module("u", "lib", "crop_tools")
    assert store.get_module_version("u", "lib", "crop_tools", "v1") is None


def test_an_app_has_one_installed_version_per_module(store: MetadataStore) -> None:
    store.insert_module(ModuleRecord("u", "lib", "tools", 1, 1))
    store.insert_module(ModuleRecord("u", "lib", "more", 1, 1))
    v1, v2 = version("tools", "v1", 2, entry_point="t:a"), version("tools", "v2", 3, entry_point="t:b")
    more = version("more", "m1", 4, git_url="git://example.com/m", git_ref="v1.0")
    for v in (v1, v2, more):
        store.insert_module_version(v)
    store.install_module_version(InstalledModuleVersionRecord("u", "user-app", "i1", 10, v1))
    store.install_module_version(InstalledModuleVersionRecord("u", "user-app", "i2", 11, more))
    store.install_module_version(InstalledModuleVersionRecord("u", "other", "i1", 12, v1))
    # installing v2 replaces the app's v1 (and keeps the other app's)
    store.install_module_version(InstalledModuleVersionRecord("u", "user-app", "i3", 13, v2))
    installed = store.list_installed_module_versions("u", "user-app", "", ALL).items
    assert installed == [
        InstalledModuleVersionRecord("u", "user-app", "i2", 11, more),
        InstalledModuleVersionRecord("u", "user-app", "i3", 13, v2),
    ]
    assert [i.id for i in store.list_installed_module_versions("u", "user-app", "tools", ALL).items] == ["i3"]
    assert [i.version.id for i in store.list_installed_module_versions("u", "other", "", ALL).items] == ["v1"]
    with pytest.raises(Conflict):  # an installation id names one installation in an app
        store.install_module_version(InstalledModuleVersionRecord("u", "user-app", "i3", 14, more))
    assert [i.id for i in store.list_installed_module_versions("u", "user-app", "", ALL).items] == ["i2", "i3"]
    with pytest.raises(LookupError):
        store.install_module_version(InstalledModuleVersionRecord("u", "user-app", "i4", 14, version("tools", "v9", 0)))
    with pytest.raises(LookupError):
        store.install_module_version(InstalledModuleVersionRecord("u", "gone", "i4", 14, v1))
    # deleting a module removes its installations everywhere
    store.delete_module("u", "lib", "tools")
    assert [i.id for i in store.list_installed_module_versions("u", "user-app", "", ALL).items] == ["i2"]
    assert store.list_installed_module_versions("u", "other", "", ALL).items == []
