"""User: the entry point of the SDK, a user's apps, tokens and (for admins) other users."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import field_mask_pb2

from pellucid.api import v1
from pellucid.client.app import App, app_proto, patch_app_request
from pellucid.client.base import BaseClient
from pellucid.client.hosted_data import DataDirectory, DataFile, data_dir, data_file
from pellucid.client.lister import Lister
from pellucid.errors import AlreadyExists, UserError

_APP_FILTERS = {"query", "name", "id"}


@dataclass(frozen=True)
class NewToken:
    """A freshly created token: `secret` is shown only this once."""

    token: v1.Token
    secret: str


@dataclass(frozen=True)
class NewUser:
    user: v1.User
    pat: NewToken


class User(Lister, BaseClient):
    """A pellucid user.

    Args:
        user_id: the user to act as; empty means the owner of the token.
        base_url: target (local, local:///dir, grpc://host:port, grpcs://host:port, https://host).
        pat: personal access token; token: session token (either one is enough).
        root_certificates_path: PEM roots for TLS targets.
        timeout: default deadline in seconds for each call (keyword only).
    """

    def __init__(
        self,
        user_id: str = "",
        base_url: str = "",
        pat: str = "",
        token: str = "",
        root_certificates_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        BaseClient.__init__(self, user_id, base_url, pat, token, root_certificates_path, **kwargs)
        Lister.__init__(self)

    def __repr__(self) -> str:
        return f"User(user_id={self._user_id or '<token owner>'!r}, base_url={self.base_url!r})"

    def dir(self, path: str) -> DataDirectory:
        """A hosted data directory: data://<owner or .my>/<collection>[/<dirs>] (client/hosted_data.py)."""
        return data_dir(self, path)

    def file(self, path: str) -> DataFile:
        """A hosted data file: data://<owner or .my>/<collection>[/<dirs>]/<file>."""
        return data_file(self, path)

    # apps

    def app(self, app_id: str, **kwargs: Any) -> App:
        """The app `app_id`, checked to exist (raises NotFound otherwise)."""
        app = App(app_id=app_id, user_id=self._user_id, **self._child_kwargs(), **kwargs)
        app.load_info()
        return app

    def create_app(
        self, app_id: str, base_workflow: str = "Language-Understanding", *, exist_ok: bool = False, **kwargs: Any
    ) -> App:
        """Create an app; kwargs may set name, description and metadata (a dict).

        `base_workflow` decides what the server embeds for search: "Empty" (nothing), "Text" or
        "Language-Understanding" (texts), "Universal" (texts and images); to embed with your own
        model, create the app, then the model, and patch base_workflow to the model's id.

        With `exist_ok`, an app that already has this id is returned as it is (unchanged:
        use patch_app to change it) instead of raising AlreadyExists, so a script can run again.
        """
        request = v1.CreateAppRequest(app=app_proto(self._user_id, app_id, base_workflow=base_workflow, **kwargs))
        try:
            created = self._call(v1.AppServiceStub, "CreateApp", request)
        except AlreadyExists:
            if not exist_ok:
                raise
            return self.app(app_id)
        return App._from_proto(created, **self._child_kwargs())

    def list_apps(
        self, filter_by: dict[str, Any] | None = None, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[App]:
        """Yield the user's apps, oldest first; `filter_by={"query": text}` keeps ids or names containing text."""
        filter_by = dict(filter_by or {})
        unknown = set(filter_by) - _APP_FILTERS
        if unknown:
            raise UserError(f"list_apps cannot filter by {sorted(unknown)}: use {sorted(_APP_FILTERS)}")
        text = filter_by.get("query") or filter_by.get("name") or filter_by.get("id") or ""
        endpoint = functools.partial(self._call, v1.AppServiceStub, "ListApps")
        request = {"user_id": self._user_id, "query": text}
        for proto in self.list_pages_generator(endpoint, v1.ListAppsRequest, request, page_no, per_page):
            yield App._from_proto(proto, **self._child_kwargs())

    def patch_app(self, app_id: str, action: str = "merge", **kwargs: Any) -> App:
        """Change an app's name, description, base_workflow or metadata.

        `action` says what happens to metadata: merge (set the given keys), overwrite
        (replace it all) or remove (delete the given keys). Naming base_workflow re-embeds the
        app's inputs (App.wait_until_indexed shows the progress).
        """
        request = patch_app_request(self._user_id, app_id, action, **kwargs)
        return App._from_proto(self._call(v1.AppServiceStub, "PatchApp", request), **self._child_kwargs())

    def delete_app(self, app_id: str) -> None:
        """Delete an app and everything in it."""
        self._call(v1.AppServiceStub, "DeleteApp", v1.DeleteAppRequest(user_id=self._user_id, app_id=app_id))

    # runners

    def create_runner(
        self, runner_id: str, labels: list[str], description: str = "", *, exist_ok: bool = False
    ) -> v1.Runner:
        """Register a runner; it serves every model version whose runner_labels are all among `labels`.

        With `exist_ok`, an existing registration is returned as it is (change it with patch_runner).
        """
        if isinstance(labels, str):
            raise UserError("labels must be a list of labels, not one string")
        try:
            return self._call(
                v1.RunnerServiceStub,
                "CreateRunner",
                v1.CreateRunnerRequest(
                    user_id=self._user_id, runner=v1.Runner(id=runner_id, labels=list(labels), description=description)
                ),
            )
        except AlreadyExists:
            if not exist_ok:
                raise
            return self.runner(runner_id)

    def patch_runner(
        self, runner_id: str, labels: list[str] | None = None, description: str | None = None
    ) -> v1.Runner:
        """Change a runner's labels (replaced as a whole) or description.

        Its open streams keep serving the labels they connected with, except that one serving
        a label the runner loses is closed and reconnects under the new labels.
        """
        if isinstance(labels, str):
            raise UserError("labels must be a list of labels, not one string")
        runner = v1.Runner(id=runner_id, labels=list(labels or []), description=description or "")
        paths = [name for name, value in (("labels", labels), ("description", description)) if value is not None]
        if not paths:
            raise UserError("patch_runner needs labels= or description=")
        return self._call(
            v1.RunnerServiceStub,
            "PatchRunner",
            v1.PatchRunnerRequest(
                user_id=self._user_id, runner=runner, update_mask=field_mask_pb2.FieldMask(paths=paths)
            ),
        )

    def runner(self, runner_id: str) -> v1.Runner:
        """A registered runner, with its live connections and capacity."""
        return self._call(
            v1.RunnerServiceStub, "GetRunner", v1.GetRunnerRequest(user_id=self._user_id, runner_id=runner_id)
        )

    def list_runners(
        self, filter_by: dict[str, Any] | None = None, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[v1.Runner]:
        """The user's runners; `filter_by={"labels": [...]}` keeps those carrying all these labels."""
        filter_by = dict(filter_by or {})
        unknown = set(filter_by) - {"labels"}
        if unknown:
            raise UserError(f"list_runners cannot filter by {sorted(unknown)}: use labels")
        labels = filter_by.get("labels") or []
        if isinstance(labels, str):
            raise UserError("filter_by labels must be a list of labels, not one string")
        endpoint = functools.partial(self._call, v1.RunnerServiceStub, "ListRunners")
        request = {"user_id": self._user_id, "labels": list(labels)}
        yield from self.list_pages_generator(endpoint, v1.ListRunnersRequest, request, page_no, per_page)

    def delete_runner(self, runner_id: str) -> None:
        """Delete a runner registration; its open streams are closed."""
        self._call(
            v1.RunnerServiceStub, "DeleteRunner", v1.DeleteRunnerRequest(user_id=self._user_id, runner_id=runner_id)
        )

    # the user itself

    def get_user_info(self, user_id: str = "") -> v1.User:
        """This user's profile (or `user_id`'s, for admins)."""
        return self._call(v1.UserServiceStub, "GetUser", v1.GetUserRequest(user_id=user_id or self._user_id))

    # tokens

    def create_pat(self, description: str = "", ttl_seconds: int = 0) -> NewToken:
        """A new personal access token for this user; keep `.secret`, it is not shown again."""
        response = self._call(
            v1.UserServiceStub,
            "CreatePat",
            v1.CreatePatRequest(user_id=self._user_id, description=description, ttl_seconds=ttl_seconds),
        )
        return NewToken(response.pat, response.secret)

    def list_pats(
        self, include_inactive: bool = False, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[v1.Token]:
        """This user's PATs (what the server keeps of them: never the secret)."""
        endpoint = functools.partial(self._call, v1.UserServiceStub, "ListPats")
        request = {"user_id": self._user_id, "include_inactive": include_inactive}
        yield from self.list_pages_generator(endpoint, v1.ListPatsRequest, request, page_no, per_page)

    def revoke_pat(self, pat_id: str) -> v1.Token:
        """Revoke a PAT at once; calls carrying it fail with Unauthenticated from then on."""
        return self._call(
            v1.UserServiceStub, "RevokePat", v1.RevokePatRequest(user_id=self._user_id, pat_id=pat_id)
        ).pat

    def create_session(self, ttl_seconds: int = 0) -> NewToken:
        """A session token (default 12 hours) to hand to a short-lived process instead of the PAT."""
        response = self._call(v1.UserServiceStub, "CreateSession", v1.CreateSessionRequest(ttl_seconds=ttl_seconds))
        return NewToken(response.session, response.secret)

    # users (admins)

    def create_user(self, user_id: str, is_admin: bool = False, metadata: dict[str, Any] | None = None) -> NewUser:
        """Create a user with a first PAT (admins only)."""
        request = v1.CreateUserRequest(user_id=user_id, is_admin=is_admin)
        if metadata:
            request.metadata.update(metadata)
        response = self._call(v1.UserServiceStub, "CreateUser", request)
        return NewUser(response.user, NewToken(response.pat, response.secret))

    def list_users(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[v1.User]:
        """Every user (admins only)."""
        endpoint = functools.partial(self._call, v1.UserServiceStub, "ListUsers")
        yield from self.list_pages_generator(endpoint, v1.ListUsersRequest, {}, page_no, per_page)
