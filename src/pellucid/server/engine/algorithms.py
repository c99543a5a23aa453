"""Algorithms: models their owners publish under a user-wide name, with semantic version tags.

`owner/name[/version]` resolves to one model version: a tag (`1.0.2`), else a model version id,
else (no version) the highest tag, or the model's latest version when it has none. A public
algorithm may be called by anyone, a private one only by its owner: to anyone else it answers
NOT_FOUND exactly as a name that does not exist. A call runs as a predict of the owner (so on
the owner's runners) once this module has decided the caller may make it.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pellucid.server.engine.access import Principal, own_namespace
from pellucid.server.engine.algorithm_data import MAX_CALL_SECONDS
from pellucid.server.engine.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from pellucid.server.engine.ids import new_id, validate_id
from pellucid.server.engine.local_models import LocalPredict
from pellucid.server.engine.models import Models, PendingPredict
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.predict import PredictInput, PredictRequest
from pellucid.server.engine.validation import MAX_NAME_LENGTH
from pellucid.server.records import (
    AlgorithmCallRecord,
    AlgorithmRecord,
    AlgorithmTagRecord,
    InsightRecord,
    ModelVersionRecord,
)
from pellucid.server.storage import Conflict, MetadataStore

SEMVER = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\Z")
MAX_INSIGHTS = 100  # keys per report
# reports per call: with MAX_INSIGHTS, at most 10,000 numbers per call, so one caller's loop
# cannot grow the owner's insights table without bound
MAX_REPORTS_PER_CALL = 100
# calls are kept this long for insights to be reported on them (the algorithm_call_retention_seconds
# setting); older ones are deleted at most every PURGE_EVERY seconds, by the next call
DEFAULT_CALL_RETENTION_SECONDS = 30 * 24 * 3600.0
PURGE_EVERY = 600.0


def semver_key(tag: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in tag.split("."))
    return major, minor, patch


@dataclass(frozen=True)
class Resolved:
    """An algorithm, the model version a reference names, and the tag that named it (if any)."""

    algorithm: AlgorithmRecord
    version: ModelVersionRecord
    tag: str
    tags: tuple[AlgorithmTagRecord, ...]


@dataclass(frozen=True)
class AlgorithmCall:
    """A call on its way: `pending.result()` waits for the runner's answer."""

    id: str
    resolved: Resolved
    pending: PendingPredict | LocalPredict
    # only the owner sees what the algorithm printed
    stdout_visible: bool


class Algorithms:
    def __init__(self, store: MetadataStore, models: Models, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._models = models
        self._clock = clock
        self.call_retention_seconds = DEFAULT_CALL_RETENTION_SECONDS
        self._last_purge = 0.0

    # publishing

    def publish(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        model_id: str,
        *,
        version_id: str = "",
        name: str = "",
        tag: str = "",
        public: bool = False,
    ) -> Resolved:
        """Publish the caller's model under `name` (default: the model id) with `public` visibility,
        and tag a version of it with `tag` if given (default: the model's latest version)."""
        owner = own_namespace(principal, user_id, "publish the models")
        name = name or model_id
        validate_id(name, "name")
        if tag and not SEMVER.match(tag):
            raise InvalidArgument(
                f"version {tag!r} is not a semantic version: use MAJOR.MINOR.PATCH, e.g. 1.0.2",
                reason="INVALID_VERSION",
                field="version",
            )
        model, version = self._models.get(principal, owner, app_id, model_id, version_id)
        if version is None:
            raise NotFound(f"model {model_id!r} has no version to publish: create one first", field="version_id")
        existing = self._store.get_algorithm(owner, name)
        if existing is not None and (existing.app_id, existing.model_id) != (model.app_id, model.id):
            raise AlreadyExists(
                f"algorithm {owner}/{name} already names model {existing.model_id!r} of app {existing.app_id!r}: "
                "publish this model under another name",
                reason="ALGORITHM_EXISTS",
                field="name",
            )
        tags = {t.tag: t for t in self._store.list_algorithm_tags(owner, name)} if existing else {}
        if tag in tags and tags[tag].version_id != version.id:  # checked before anything is written
            raise AlreadyExists(
                f"{owner}/{name} version {tag} already names model version {tags[tag].version_id}: "
                "a released version never changes, publish this one as a new version",
                reason="VERSION_EXISTS",
                field="version",
            )
        now = self._clock()
        algorithm = AlgorithmRecord(
            user_id=owner,
            name=name,
            app_id=model.app_id,
            model_id=model.id,
            public=public,
            created_at=existing.created_at if existing else now,
            modified_at=now,
        )
        try:
            self._store.save_algorithm(algorithm)
            if tag and tag not in tags:
                self._store.insert_algorithm_tag(AlgorithmTagRecord(owner, name, tag, version.id, now))
        except Conflict:  # a concurrent publish of the same tag
            raise AlreadyExists(f"{owner}/{name} version {tag} already exists", field="version") from None
        except LookupError:  # the model or version was deleted meanwhile
            raise NotFound(f"model {model_id!r} or its version was deleted", field="model_id") from None
        tags_now = self._sorted_tags(owner, name)
        return Resolved(algorithm, version, tag, tags_now)

    def _sorted_tags(self, owner: str, name: str) -> tuple[AlgorithmTagRecord, ...]:
        return tuple(
            sorted(self._store.list_algorithm_tags(owner, name), key=lambda t: semver_key(t.tag), reverse=True)
        )

    # reading

    def _visible(self, principal: Principal, owner: str, name: str) -> AlgorithmRecord:
        algorithm = self._store.get_algorithm(owner, name)
        if algorithm is None or not (algorithm.public or owner == principal.user_id):
            raise NotFound(f"algorithm {owner}/{name} not found", reason="ALGORITHM_NOT_FOUND", field="algorithm")
        return algorithm

    def resolve(self, principal: Principal, reference: str) -> Resolved:
        """`owner/name[/version]` -> the algorithm and model version it names, if the caller may call it."""
        owner, name, version = parse_reference(reference)
        algorithm = self._visible(principal, owner, name)
        tags = self._sorted_tags(owner, name)
        tag, version_id = "", ""
        if version and SEMVER.match(version):
            by_tag = {t.tag: t for t in tags}
            if version not in by_tag:
                known = ", ".join(t.tag for t in tags) or "none"
                raise NotFound(
                    f"algorithm {owner}/{name} has no version {version} (versions: {known})",
                    reason="ALGORITHM_VERSION_NOT_FOUND",
                    field="algorithm",
                )
            tag, version_id = version, by_tag[version].version_id
        elif version:
            version_id = version
        elif tags:
            tag, version_id = tags[0].tag, tags[0].version_id
        acting = self._as_owner(principal, algorithm)
        try:
            _, model_version = self._models.get(acting, owner, algorithm.app_id, algorithm.model_id, version_id)
        except NotFound:
            raise NotFound(
                f"algorithm {owner}/{name}: version {version or version_id or 'latest'} not found "
                "(its model or model version was deleted)",
                reason="ALGORITHM_VERSION_NOT_FOUND",
                field="algorithm",
            ) from None
        if model_version is None:
            raise NotFound(f"algorithm {owner}/{name} has no version", field="algorithm")
        return Resolved(algorithm, model_version, tag, tags)

    def list(
        self, principal: Principal, user_id: str, page: PageRequest
    ) -> tuple[builtins.list[tuple[AlgorithmRecord, tuple[AlgorithmTagRecord, ...]]], str]:
        """The caller's algorithms, or another user's public ones."""
        owner = user_id or principal.user_id
        validate_id(owner, "user_id")
        public_only = owner != principal.user_id
        scope = f"algorithms:{owner}:{public_only}"
        result = self._store.list_algorithms(owner, public_only, to_query(page, scope))
        return [(a, self._sorted_tags(a.user_id, a.name)) for a in result.items], next_token(result, scope)

    # calling

    def call(self, principal: Principal, reference: str, given: PredictInput, deadline_seconds: float) -> AlgorithmCall:
        """Resolve the algorithm, record the call and queue it for one of the owner's runners."""
        resolved = self.resolve(principal, reference)
        algorithm, version = resolved.algorithm, resolved.version
        call_id = new_id()
        now = self._clock()
        if now - self._last_purge > PURGE_EVERY:
            self._last_purge = now
            # never a call that may still run: its runner reads data:// and reports insights by its id
            self._store.purge_algorithm_calls(now - max(self.call_retention_seconds, MAX_CALL_SECONDS))
        self._store.insert_algorithm_call(
            AlgorithmCallRecord(call_id, algorithm.user_id, algorithm.name, version.id, principal.user_id, now)
        )
        request = PredictRequest(
            user_id=algorithm.user_id,
            app_id=algorithm.app_id,
            model_id=algorithm.model_id,
            version_id=version.id,
            inputs=(dataclasses.replace(given, id=call_id),),  # the runner knows the call by its input's id
            deadline_seconds=deadline_seconds,
        )
        pending = self._models.submit(self._as_owner(principal, algorithm), request)
        return AlgorithmCall(call_id, resolved, pending, stdout_visible=principal.user_id == algorithm.user_id)

    @staticmethod
    def _as_owner(principal: Principal, algorithm: AlgorithmRecord) -> Principal:
        """The owner's principal for a call this module has allowed: a predict of the owner's model."""
        if principal.user_id == algorithm.user_id:
            return principal
        return Principal(user_id=algorithm.user_id, is_admin=False, token_id=f"algorithm:{principal.token_id}")

    # insights

    def report_insights(self, principal: Principal, call_id: str, values: dict[str, float]) -> InsightRecord:
        """Store numeric insights about one call; its algorithm's owner and its caller may report them
        (at most MAX_INSIGHTS numbers per report and MAX_REPORTS_PER_CALL reports per call)."""
        validate_id(call_id, "call_id")
        call = self._store.get_algorithm_call(call_id)
        if call is None or principal.user_id not in (call.user_id, call.caller):
            raise NotFound(f"algorithm call {call_id!r} not found", reason="CALL_NOT_FOUND", field="call_id")
        if not values:
            raise InvalidArgument("insights is empty: report at least one number", field="insights")
        if len(values) > MAX_INSIGHTS:
            raise InvalidArgument(
                f"{len(values)} insights in one report: the limit is {MAX_INSIGHTS}", field="insights"
            )
        for key, value in values.items():
            if not key or len(key) > MAX_NAME_LENGTH or "\x00" in key:
                raise InvalidArgument(
                    f"insight name {key!r}: use 1-{MAX_NAME_LENGTH} characters without NUL", field="insights"
                )
            if not math.isfinite(value):
                raise InvalidArgument(f"insight {key!r} is {value}: insights are finite numbers", field="insights")
        insight = InsightRecord(
            call.user_id, call.name, call.id, call.version_id, principal.user_id, dict(values), self._clock()
        )
        if not self._store.insert_insights(insight, MAX_REPORTS_PER_CALL):
            raise ResourceExhausted(
                f"algorithm call {call.id!r} already has {MAX_REPORTS_PER_CALL} insight reports, the limit per call: "
                f"put several numbers in one report (up to {MAX_INSIGHTS} each)",
                reason="TOO_MANY_INSIGHTS",
                field="call_id",
            )
        return insight

    def list_insights(
        self, principal: Principal, reference: str, page: PageRequest
    ) -> tuple[builtins.list[InsightRecord], str]:
        """The insights of an algorithm's calls, for its owner only."""
        owner, name, version = parse_reference(reference)
        if version:
            raise InvalidArgument("list insights of owner/name (insights of every version)", field="algorithm")
        algorithm = self._visible(principal, owner, name)
        if algorithm.user_id != principal.user_id:
            raise PermissionDenied(
                f"only {owner} reads the insights of {owner}/{name}", reason="NOT_OWNER", field="algorithm"
            )
        scope = f"insights:{owner}:{name}"
        result = self._store.list_insights(owner, name, to_query(page, scope))
        return result.items, next_token(result, scope)


def parse_reference(reference: str) -> tuple[str, str, str]:
    """`owner/name[/version]` (an `algo://` prefix is allowed) -> (owner, name, version)."""
    text = reference.strip()
    if text.startswith("algo://"):
        text = text[len("algo://") :]
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(
            f"algorithm {reference!r}: name it as owner/name, owner/name/1.0.2 or owner/name/<model version id>",
            reason="INVALID_ALGORITHM",
            field="algorithm",
        )
    validate_id(parts[0], "algorithm owner")
    validate_id(parts[1], "algorithm name")
    version = parts[2] if len(parts) == 3 else ""
    if version and not SEMVER.match(version):
        validate_id(version, "algorithm version")
    return parts[0], parts[1], version


__all__ = ["AlgorithmCall", "Algorithms", "Resolved", "parse_reference"]
