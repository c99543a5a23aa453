"""Modules: the server checks where a version's code is and records which version an app
installed (it never fetches or runs the code). The rules through the engine, then the SDK
through gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid.api import v1
from pellucid.client.module import Module
from pellucid.client.user import User
from pellucid.errors import AlreadyExists, NotFound, UserError
from pellucid.errors import InvalidArgument as ClientInvalidArgument
from pellucid.server.engine import Engine, Principal
from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.errors import NotFound as EngineNotFound
from pellucid.server.engine.modules import ModuleVersionSpec
from pellucid.server.engine.paging import PageRequest
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store

ALICE = Principal("alice", is_admin=False, token_id="t")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine(
        open_metadata_store(f"sqlite://{tmp_path / 'metadata.db'}"), open_blob_store(f"file://{tmp_path / 'blobs'}")
    )
    engine.users.bootstrap("alice")
    engine.apps.create(ALICE, "alice", "lib")
    engine.modules.create(ALICE, "alice", "lib", "tools")
    yield engine
    engine.close()


@pytest.mark.parametrize(
    "spec",
    [
        ModuleVersionSpec(git_url="https://github.com/acme/tools.git", git_ref="main"),
        ModuleVersionSpec(git_url="ssh://git@example.com:2222/acme/tools.git", git_ref="v1.2.0"),
        ModuleVersionSpec(git_url="git://example.com/tools", git_commit=COMMIT),
        ModuleVersionSpec(git_url="git@github.com:acme/tools.git", git_ref="release/2024-01", git_commit=COMMIT),
        ModuleVersionSpec(entry_point="acme_tools.crop:run"),
        ModuleVersionSpec(entry_point="acme:Pipeline.build"),
    ],
)
def test_good_sources_are_stored_as_given(engine: Engine, spec: ModuleVersionSpec) -> None:
    version = engine.modules.create_version(ALICE, "alice", "lib", "tools", spec)
    assert (version.git_url, version.git_ref, version.git_commit, version.entry_point) == (
        spec.git_url,
        spec.git_ref,
        spec.git_commit,
        spec.entry_point,
    )


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        (ModuleVersionSpec(), "version", "has no source"),
        (ModuleVersionSpec(git_url="http://example.com/t.git", git_ref="main"), "version.git.url", "https://, ssh://"),
        (ModuleVersionSpec(git_url="file:///srv/repo", git_ref="main"), "version.git.url", "file://"),
        (ModuleVersionSpec(git_url="/srv/repo", git_ref="main"), "version.git.url", "local paths"),
        (ModuleVersionSpec(git_url="ext::sh -c touch% /tmp/x", git_ref="main"), "version.git.url", "no spaces"),
        (ModuleVersionSpec(git_url="ext::ssh-helper", git_ref="main"), "version.git.url", "other transports"),
        (
            ModuleVersionSpec(git_url="https://me:secret@example.com/t.git", git_ref="main"),
            "version.git.url",
            "password",
        ),
        (ModuleVersionSpec(git_url="https:///t.git", git_ref="main"), "version.git.url", "no host"),
        (ModuleVersionSpec(git_url="https://example.com/t.git"), "version.git.ref", "ref (branch or tag) or a commit"),
        (ModuleVersionSpec(git_url="https://example.com/t.git", git_ref="a..b"), "version.git.ref", "not a git branch"),
        (ModuleVersionSpec(git_url="https://example.com/t.git", git_ref="-x"), "version.git.ref", "not a git branch"),
        (ModuleVersionSpec(git_url="https://example.com/t.git", git_ref="x.lock"), "version.git.ref", "not a git"),
        (ModuleVersionSpec(git_url="https://example.com/t.git", git_commit="abc123"), "version.git.commit", "40 or 64"),
        (ModuleVersionSpec(entry_point="acme.tools"), "version.entry_point", "package.module:attr"),
        (ModuleVersionSpec(entry_point="acme:run [extra]"), "version.entry_point", "package.module:attr"),
        (ModuleVersionSpec(entry_point="1acme:run"), "version.entry_point", "package.module:attr"),
        (ModuleVersionSpec(entry_point="a:b", git_url="https://example.com/t.git"), "version", "both git and entry"),
    ],
)
def test_bad_sources_are_refused_saying_what_to_fix(
    engine: Engine, spec: ModuleVersionSpec, field: str, says: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        engine.modules.create_version(ALICE, "alice", "lib", "tools", spec)
    assert raised.value.field == field and says in str(raised.value)
    assert engine.modules.list_versions(ALICE, "alice", "lib", "tools", PageRequest())[0] == []  # nothing stored


def test_installing_records_the_version_an_app_uses(engine: Engine) -> None:
    engine.apps.create(ALICE, "alice", "service")
    v1_ = engine.modules.create_version(ALICE, "alice", "lib", "tools", ModuleVersionSpec("v1", entry_point="t:a"))
    engine.modules.create(ALICE, "alice", "lib", "empty")
    with pytest.raises(EngineNotFound, match="no version to install"):
        engine.modules.install(ALICE, "alice", "service", "lib", "empty")
    installed = engine.modules.install(ALICE, "alice", "service", "lib", "tools")  # the latest: v1
    assert installed.version == v1_ and installed.app_id == "service"
    engine.modules.create_version(ALICE, "alice", "lib", "tools", ModuleVersionSpec("v2", entry_point="t:b"))
    engine.modules.install(ALICE, "alice", "service", "lib", "tools", "v1")  # stays on v1 when asked
    (listed,), _ = engine.modules.list_installed(ALICE, "alice", "service", PageRequest())
    assert listed.version.id == "v1"
    engine.modules.install(ALICE, "alice", "service", "lib", "tools")
    (listed,), _ = engine.modules.list_installed(ALICE, "alice", "service", PageRequest())
    assert listed.version.id == "v2"  # one installation per module: the newer one replaced it


def test_modules_through_the_sdk(alice: User, bob: User, unique: str) -> None:
    lib = alice.create_app(f"lib-{unique}")
    service = alice.create_app(f"svc-{unique}")
    tools = lib.create_module(
        "tools", "image tools", git_url="https://github.com/acme/tools.git", git_ref="v1.0", metadata={"team": "cv"}
    )
    assert tools.version_id  # pinned to its first version
    info = lib.module("tools").load_info()
    assert info.description == "image tools" and info.module_version.git.ref == "v1.0"
    assert info.metadata["team"] == "cv"
    second = tools.create_version(entry_point="acme_tools.crop:run", version_id="v2")
    assert second.version_id == "v2" and lib.module("tools").module_info.module_version.id == "v2"  # type: ignore[union-attr]
    assert [m.version_id for m in tools.list_versions()] == [tools.version_id, "v2"]
    assert [m.version_id for m in tools.list_versions(page_no=2, per_page=1)] == ["v2"]
    by_url = Module(
        f"{lib.base_url}/{alice.user_id}/{lib.id}/modules/tools/versions/v2", pat=alice._connection.settings.pat
    )
    assert by_url.load_info().module_version.entry_point == "acme_tools.crop:run"

    with pytest.raises(ClientInvalidArgument, match="https://, ssh:// or git://"):
        lib.create_module("bad", git_url="file:///etc", git_ref="main")
    with pytest.raises(NotFound):  # the refused version took its module back with it
        lib.module("bad")
    with pytest.raises(AlreadyExists):
        lib.create_module("tools")
    lib.create_module("other-thing")
    assert [m.id for m in lib.list_modules()] == ["tools", "other-thing"]
    assert [m.id for m in lib.list_modules(filter_by={"query": "OTHER"})] == ["other-thing"]
    with pytest.raises(UserError, match="only_in_app"):
        list(lib.list_modules(only_in_app=False))

    installed = lib.module("tools", module_version_id=tools.version_id).install(service.id)
    assert installed.app_id == service.id and installed.module_version.git.url.endswith("tools.git")
    (found,) = service.list_installed_module_versions()
    assert (found.id, found.app_id, found.version_id) == ("tools", lib.id, tools.version_id)
    assert found.installed_module_version_info is not None and found.installed_module_version_info.id == installed.id
    lib.module("tools").install(service.id)  # the latest, v2, replaces it
    assert [m.version_id for m in service.list_installed_module_versions(filter_by={"module_id": "tools"})] == ["v2"]
    assert list(service.list_installed_module_versions(filter_by={"module_id": "other-thing"})) == []

    with pytest.raises(NotFound):  # another user's app: not visible, not installable
        Module(module_id="tools", app_id=lib.id, user_id=alice.user_id, **_as(bob)).load_info()
    with pytest.raises(NotFound):
        Module(module_id="tools", app_id=lib.id, user_id=alice.user_id, **_as(bob)).install()

    lib.delete_module("tools")
    assert list(service.list_installed_module_versions()) == []
    with pytest.raises(NotFound):
        lib.delete_module("tools")
    assert isinstance(installed, v1.InstalledModuleVersion)


def _as(user: User) -> dict[str, str]:
    return {"base_url": user.base_url, "pat": user._connection.settings.pat}
