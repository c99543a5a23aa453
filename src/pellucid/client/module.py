"""Module: a named, versioned package of code an app offers (a git repository at a ref, or a
Python entry point), and installing a version into an app.

The server records where each version's code is and which version each app installed; it
never fetches or runs the code: whoever deploys the app reads `App.list_installed_module_versions`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from pellucid.api import v1
from pellucid.client.base import BaseClient
from pellucid.client.lister import Lister
from pellucid.client.urls import split_url
from pellucid.errors import UserError

VERSION_FIELDS = ("git_url", "git_ref", "git_commit", "entry_point", "version_id", "version_description", "metadata")


def module_version_proto(
    git_url: str = "",
    git_ref: str = "",
    git_commit: str = "",
    entry_point: str = "",
    version_id: str = "",
    version_description: str = "",
    metadata: dict[str, Any] | None = None,
) -> v1.ModuleVersion:
    """A version's message: git (url with a ref and/or commit) or an entry point, not both."""
    if entry_point and (git_url or git_ref or git_commit):
        raise UserError("a module version has one source: give git_url (with git_ref or git_commit) or entry_point")
    if not entry_point and not git_url:
        raise UserError("a module version needs git_url (with git_ref or git_commit) or entry_point")
    version = v1.ModuleVersion(id=version_id, description=version_description)
    if entry_point:
        version.entry_point = entry_point
    else:
        version.git.CopyFrom(v1.GitSource(url=git_url, ref=git_ref, commit=git_commit))
    if metadata:
        if not isinstance(metadata, dict):
            raise UserError(f"metadata must be a dict, got {type(metadata).__name__}")
        version.metadata.update(metadata)
    return version


class Module(Lister, BaseClient):
    """A module, by `url` (`<base>/<user>/<app>/modules/<id>[/versions/<vid>]`) or by `module_id`
    with `app_id` (and `user_id`). `module_version={"id": "..."}` pins a version; the default is
    the latest. Constructing one makes no call."""

    def __init__(
        self,
        url: str = "",
        module_id: str = "",
        module_version: dict[str, str] | None = None,
        base_url: str = "",
        pat: str = "",
        token: str = "",
        root_certificates_path: str | None = None,
        *,
        app_id: str = "",
        user_id: str = "",
        **kwargs: Any,
    ) -> None:
        version_id = (module_version or {}).get("id", "")
        if url and module_id:
            raise UserError("give either url or module_id, not both")
        if url:
            parsed = split_url(url, "modules")
            user_id, app_id, module_id = parsed.user_id, parsed.app_id, parsed.resource_id
            version_id = version_id or parsed.version_id
            base_url = base_url or parsed.base
        if not module_id or not app_id:
            raise UserError(
                "Module needs module_id and app_id, or a url like <base>/<user_id>/<app_id>/modules/<module_id>"
            )
        self.module_info: v1.Module | None = kwargs.pop("_module_info", None)
        # set on the Modules App.list_installed_module_versions returns: which app installed it, when
        self.installed_module_version_info: v1.InstalledModuleVersion | None = kwargs.pop("_installed_info", None)
        BaseClient.__init__(self, user_id, base_url, pat, token, root_certificates_path, **kwargs)
        Lister.__init__(self)
        self.id, self.app_id, self.version_id = module_id, app_id, version_id

    @classmethod
    def _from_proto(cls, proto: v1.Module, **kwargs: Any) -> Module:
        version = {"id": proto.module_version.id} if proto.HasField("module_version") else None
        return cls(
            module_id=proto.id,
            app_id=proto.app_id,
            user_id=proto.user_id,
            module_version=version,
            _module_info=proto,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"Module(user_id={self._user_id!r}, app_id={self.app_id!r}, module_id={self.id!r}, "
            f"version={self.version_id!r})"
        )

    def _ids(self, **extra: Any) -> dict[str, Any]:
        return {"user_id": self._user_id, "app_id": self.app_id, "module_id": self.id, **extra}

    def _pinned(self, version_id: str) -> Module:
        return Module(
            module_id=self.id,
            app_id=self.app_id,
            user_id=self._user_id,
            module_version={"id": version_id},
            **self._child_kwargs(),
        )

    def load_info(self) -> v1.Module:
        """Fetch the module and its version (raises NotFound if either is missing)."""
        self.module_info = self._call(
            v1.ModuleServiceStub, "GetModule", v1.GetModuleRequest(**self._ids(version_id=self.version_id))
        )
        return self.module_info

    def create_version(self, **kwargs: Any) -> Module:
        """A new version (kwargs: git_url with git_ref and/or git_commit, or entry_point
        "package.module:attr"; version_id, version_description, metadata); returns a Module
        pinned to it. Versions never change: a new ref or commit is a new version."""
        unknown = set(kwargs) - set(VERSION_FIELDS)
        if unknown:
            raise UserError(f"unknown module version fields {sorted(unknown)}: use {sorted(VERSION_FIELDS)}")
        version = self._call(
            v1.ModuleServiceStub,
            "CreateModuleVersion",
            v1.CreateModuleVersionRequest(**self._ids(), version=module_version_proto(**kwargs)),
        )
        return self._pinned(version.id)

    def list_versions(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[Module]:
        """One Module per version, oldest first."""
        endpoint = functools.partial(self._call, v1.ModuleServiceStub, "ListModuleVersions")
        for version in self.list_pages_generator(
            endpoint, v1.ListModuleVersionsRequest, self._ids(), page_no, per_page
        ):
            yield self._pinned(version.id)

    def install(self, app_id: str = "", installed_id: str = "") -> v1.InstalledModuleVersion:
        """Record that `app_id` (default: the module's own app; another app of the same user) uses
        this version (the pinned one, else the latest), replacing its installation of another
        version of this module. Only the record is made: no code is fetched or run."""
        return self._call(
            v1.ModuleServiceStub,
            "InstallModuleVersion",
            v1.InstallModuleVersionRequest(
                user_id=self._user_id,
                app_id=app_id or self.app_id,
                module_app_id=self.app_id,
                module_id=self.id,
                module_version_id=self.version_id,
                id=installed_id,
            ),
        )


__all__ = ["Module", "module_version_proto"]
