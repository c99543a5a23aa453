"""Modules: named, versioned packages of code an app offers, and which version each app installed.

A version says where its code is: a git repository (https, ssh or git URL) at a ref and/or a
commit, or a Python entry point ("package.module:attr"). The server checks the form, stores it
and records installations; it never fetches, installs, imports or runs the code (whoever
deploys the app does, from what `list_installed_module_versions` says).
"""

from __future__ import annotations

import builtins
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.errors import AlreadyExists, InvalidArgument, NotFound
from pellucid.server.engine.ids import new_id, validate_id
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.validation import MAX_DESCRIPTION_LENGTH, check_metadata, check_text
from pellucid.server.records import (
    InstalledModuleVersionRecord,
    ModuleRecord,
    ModuleVersionRecord,
)
from pellucid.server.storage import Conflict, MetadataStore

GIT_SCHEMES = ("https", "ssh", "git")
MAX_URL_LENGTH = 2048
MAX_REF_LENGTH = 255
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^:\s][^\s]*$")  # git@host:owner/repo.git (ssh)
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256, lower case
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_ENTRY_POINT = re.compile(rf"^{_DOTTED}:{_DOTTED}$")


@dataclass(frozen=True)
class ModuleVersionSpec:
    id: str = ""
    description: str = ""
    git_url: str = ""
    git_ref: str = ""
    git_commit: str = ""
    entry_point: str = ""
    metadata: dict[str, Any] | None = None


def check_git_url(url: str, field: str) -> str:
    """An https, ssh or git URL of a repository (or ssh's user@host:path form), with no password."""
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidArgument(
            f"{field} must be a URL with no spaces or control characters, at most {MAX_URL_LENGTH} long", field=field
        )
    if _SCP_LIKE.match(url):
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise InvalidArgument(f"{field} {url!r} is not a valid URL", field=field) from None
    if parts.scheme.lower() not in GIT_SCHEMES:
        raise InvalidArgument(
            f"{field} {url!r}: use an https://, ssh:// or git:// URL (or user@host:path); "
            "local paths, file:// and other transports are refused",
            field=field,
        )
    if not host or not parts.path.strip("/"):
        raise InvalidArgument(f"{field} {url!r} names no host and repository path", field=field)
    if parts.password is not None:
        raise InvalidArgument(
            f"{field} holds a password: give the URL without credentials (they would be stored and shown)",
            field=field,
        )
    return url


def check_git_ref(ref: str, field: str) -> str:
    """A branch or tag name as `git check-ref-format` allows it."""
    bad = (
        len(ref) > MAX_REF_LENGTH
        or ref.startswith(("-", "/", "."))
        or ref.endswith(("/", ".", ".lock"))
        or any(part in ref for part in ("..", "@{", "//", "/."))
        or ref == "@"
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "~^:?*[\\" for c in ref)
    )
    if bad:
        raise InvalidArgument(
            f"{field} {ref!r} is not a git branch or tag name (no spaces, '..', '~^:?*[\\', "
            "leading '-' or '/', trailing '.lock')",
            field=field,
        )
    return ref


def check_source(spec: ModuleVersionSpec, field: str) -> None:
    """Exactly one source: git (url with a ref, a commit, or both), or an entry point."""
    if spec.entry_point and (spec.git_url or spec.git_ref or spec.git_commit):
        raise InvalidArgument(f"{field} gives both git and entry_point: a version has one source", field=field)
    if spec.entry_point:
        if not _ENTRY_POINT.match(spec.entry_point):
            raise InvalidArgument(
                f"{field}.entry_point {spec.entry_point!r}: use package.module:attr (Python names, dotted)",
                field=f"{field}.entry_point",
            )
        return
    if not spec.git_url:
        raise InvalidArgument(
            f"{field} has no source: give git (url and ref or commit) or entry_point (package.module:attr)",
            field=field,
        )
    check_git_url(spec.git_url, f"{field}.git.url")
    if not spec.git_ref and not spec.git_commit:
        raise InvalidArgument(
            f"{field}.git needs a ref (branch or tag) or a commit, so the version names fixed code",
            field=f"{field}.git.ref",
        )
    if spec.git_ref:
        check_git_ref(spec.git_ref, f"{field}.git.ref")
    if spec.git_commit and not _COMMIT.match(spec.git_commit):
        raise InvalidArgument(
            f"{field}.git.commit {spec.git_commit!r}: use the full commit id (40 or 64 lower-case hex digits)",
            field=f"{field}.git.commit",
        )


class Modules:
    def __init__(self, store: MetadataStore, apps: Apps, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._apps = apps
        self._clock = clock

    def create(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        module_id: str,
        description: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> ModuleRecord:
        app = self._apps.get(principal, user_id, app_id)
        validate_id(module_id, "module.id")
        check_text(description, "module.description", MAX_DESCRIPTION_LENGTH)
        now = self._clock()
        module = ModuleRecord(
            app.user_id, app.id, module_id, now, now, description, check_metadata(metadata or {}, "module.metadata")
        )
        try:
            self._store.insert_module(module)
        except Conflict:
            raise AlreadyExists(f"module {module_id!r} already exists in app {app.id!r}", field="module.id") from None
        return module

    def get(
        self, principal: Principal, user_id: str, app_id: str, module_id: str, version_id: str = ""
    ) -> tuple[ModuleRecord, ModuleVersionRecord | None]:
        """The module and its version (the latest if none is named; None when it has none)."""
        app = self._apps.get(principal, user_id, app_id)
        validate_id(module_id, "module_id")
        module = self._store.get_module(app.user_id, app.id, module_id)
        if module is None:
            raise NotFound(
                f"module {module_id!r} not found in app {app.id!r}", reason="MODULE_NOT_FOUND", field="module_id"
            )
        if version_id:
            validate_id(version_id, "version_id")
        version = self._store.get_module_version(app.user_id, app.id, module_id, version_id)
        if version_id and version is None:
            raise NotFound(f"version {version_id!r} of module {module_id!r} not found", field="version_id")
        return module, version

    def list(
        self, principal: Principal, user_id: str, app_id: str, page: PageRequest, text: str = ""
    ) -> tuple[builtins.list[tuple[ModuleRecord, ModuleVersionRecord | None]], str]:
        app = self._apps.get(principal, user_id, app_id)
        check_text(text, "query", 256)
        scope = f"modules:{app.user_id}:{app.id}:{text}"
        result = self._store.list_modules(app.user_id, app.id, text, to_query(page, scope))
        modules = [(m, self._store.get_module_version(app.user_id, app.id, m.id)) for m in result.items]
        return modules, next_token(result, scope)

    def delete(self, principal: Principal, user_id: str, app_id: str, module_id: str) -> None:
        """Delete a module, its versions, and every app's installation of them."""
        module, _ = self.get(principal, user_id, app_id, module_id)
        if not self._store.delete_module(module.user_id, module.app_id, module.id):
            raise NotFound(f"module {module_id!r} not found", field="module_id")

    def create_version(
        self, principal: Principal, user_id: str, app_id: str, module_id: str, spec: ModuleVersionSpec
    ) -> ModuleVersionRecord:
        module, _ = self.get(principal, user_id, app_id, module_id)
        version_id = spec.id or new_id()
        validate_id(version_id, "version.id")
        check_text(spec.description, "version.description", MAX_DESCRIPTION_LENGTH)
        check_source(spec, "version")
        version = ModuleVersionRecord(
            user_id=module.user_id,
            app_id=module.app_id,
            module_id=module.id,
            id=version_id,
            created_at=self._clock(),
            description=spec.description,
            git_url=spec.git_url,
            git_ref=spec.git_ref,
            git_commit=spec.git_commit,
            entry_point=spec.entry_point,
            metadata=check_metadata(spec.metadata or {}, "version.metadata"),
        )
        try:
            self._store.insert_module_version(version)
        except Conflict:
            raise AlreadyExists(
                f"version {version_id!r} of module {module_id!r} already exists: versions never change, create another",
                field="version.id",
            ) from None
        except LookupError:
            raise NotFound(f"module {module_id!r} was deleted", field="module_id") from None
        return version

    def list_versions(
        self, principal: Principal, user_id: str, app_id: str, module_id: str, page: PageRequest
    ) -> tuple[builtins.list[ModuleVersionRecord], str]:
        module, _ = self.get(principal, user_id, app_id, module_id)
        scope = f"module-versions:{module.user_id}:{module.app_id}:{module.id}"
        try:
            result = self._store.list_module_versions(module.user_id, module.app_id, module.id, to_query(page, scope))
        except LookupError:
            raise NotFound(f"module {module_id!r} was deleted", field="module_id") from None
        return result.items, next_token(result, scope)

    def install(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        module_app_id: str,
        module_id: str,
        version_id: str = "",
        installed_id: str = "",
    ) -> InstalledModuleVersionRecord:
        """Record that the app uses this version of the module (of this app or another app of the
        same user), replacing its installation of another version. Nothing is fetched or run."""
        app = self._apps.get(principal, user_id, app_id)
        _, version = self.get(principal, app.user_id, module_app_id or app.id, module_id, version_id)
        if version is None:
            raise NotFound(
                f"module {module_id!r} has no version to install: create one first", field="module_version_id"
            )
        installed_id = installed_id or new_id()
        validate_id(installed_id, "id")
        installed = InstalledModuleVersionRecord(app.user_id, app.id, installed_id, self._clock(), version)
        try:
            self._store.install_module_version(installed)
        except Conflict:
            raise AlreadyExists(
                f"installation {installed_id!r} already exists in app {app.id!r} (of another module)", field="id"
            ) from None
        except LookupError:
            raise NotFound(f"version {version.id!r} of module {module_id!r} was deleted", field="module_id") from None
        return installed

    def list_installed(
        self, principal: Principal, user_id: str, app_id: str, page: PageRequest, module_id: str = ""
    ) -> tuple[builtins.list[InstalledModuleVersionRecord], str]:
        app = self._apps.get(principal, user_id, app_id)
        if module_id:
            validate_id(module_id, "module_id")
        scope = f"installed-modules:{app.user_id}:{app.id}:{module_id}"
        result = self._store.list_installed_module_versions(app.user_id, app.id, module_id, to_query(page, scope))
        return result.items, next_token(result, scope)


__all__ = ["GIT_SCHEMES", "ModuleVersionSpec", "Modules", "check_git_ref", "check_git_url", "check_source"]
