"""Runner registrations and their live connections."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import replace

from pellucid.server.engine.access import Principal, own_namespace
from pellucid.server.engine.errors import AlreadyExists, InvalidArgument, NotFound
from pellucid.server.engine.ids import validate_id
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.routing import Router, StreamInfo, StreamMessage
from pellucid.server.engine.validation import MAX_DESCRIPTION_LENGTH, check_text
from pellucid.server.records import RunnerRecord
from pellucid.server.storage import Conflict, MetadataStore

MAX_CAPACITY = 1024
PATCHABLE_FIELDS = ("labels", "description")


class Runners:
    def __init__(self, store: MetadataStore, router: Router, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._router = router
        self._clock = clock
        router.watch_streams(self._stale_streams)

    def _stale_streams(self, streams: builtins.list[StreamInfo]) -> dict[str, str]:
        """Those of this replica's `streams` whose runner was deleted, or lost a label the stream
        serves, through another replica (which closes only the streams it holds itself)."""
        runners = {key: self._store.get_runner(*key) for key in {(s.user_id, s.runner_id) for s in streams}}
        stale = {}
        for stream in streams:
            runner = runners[(stream.user_id, stream.runner_id)]
            if runner is None:
                stale[stream.id] = "runner deleted"
            elif not stream.labels <= frozenset(runner.labels):
                stale[stream.id] = "the runner's labels changed"
        return stale

    @property
    def heartbeat_seconds(self) -> float:
        return self._router.heartbeat_seconds

    def create(
        self, principal: Principal, user_id: str, runner_id: str, labels: tuple[str, ...], description: str = ""
    ) -> RunnerRecord:
        owner = own_namespace(principal, user_id, "create runners")
        validate_id(runner_id, "runner_id")
        labels = _checked_labels(labels)
        check_text(description, "description", MAX_DESCRIPTION_LENGTH)
        runner = RunnerRecord(owner, runner_id, self._clock(), labels, description)
        try:
            self._store.insert_runner(runner)
        except Conflict:
            raise AlreadyExists(f"runner {runner_id!r} already exists for user {owner!r}", field="runner_id") from None
        return runner

    def get(self, principal: Principal, user_id: str, runner_id: str) -> RunnerRecord:
        owner = own_namespace(principal, user_id, "read the runners")
        validate_id(runner_id, "runner_id")
        runner = self._store.get_runner(owner, runner_id)
        if runner is None:
            raise NotFound(
                f"runner {runner_id!r} of user {owner!r} not found: create it with User.create_runner",
                reason="RUNNER_NOT_FOUND",
                field="runner_id",
            )
        return runner

    def list(
        self, principal: Principal, user_id: str, page: PageRequest, labels: tuple[str, ...] = ()
    ) -> tuple[builtins.list[RunnerRecord], str]:
        owner = own_namespace(principal, user_id, "list the runners")
        for i, label in enumerate(labels):
            validate_id(label, f"labels[{i}]")
        scope = f"runners:{owner}:{','.join(sorted(labels))}"
        result = self._store.list_runners(owner, tuple(labels), to_query(page, scope))
        return result.items, next_token(result, scope)

    def patch(
        self, principal: Principal, user_id: str, runner_id: str, changes: dict[str, tuple[str, ...] | str]
    ) -> RunnerRecord:
        """Change a registration's labels or description (its owner only).

        Open streams keep the labels they connected with, but a stream serving a label the
        runner no longer has is closed, so it stops getting that work; its process reconnects
        under the new registration (and its unfinished items go to other runners).
        """
        unknown = sorted(set(changes) - set(PATCHABLE_FIELDS))
        if unknown or not changes:
            raise InvalidArgument(
                f"cannot patch {', '.join(unknown) or 'nothing'}: patchable fields are {', '.join(PATCHABLE_FIELDS)}",
                field="update_mask",
            )
        owner = own_namespace(principal, user_id, "change runners")
        runner = self.get(principal, owner, runner_id)
        updated: dict[str, object] = {}
        if "labels" in changes:
            updated["labels"] = _checked_labels(tuple(changes["labels"]))
        if "description" in changes:
            updated["description"] = check_text(str(changes["description"]), "description", MAX_DESCRIPTION_LENGTH)
        runner = replace(runner, **updated)  # type: ignore[arg-type]
        if not self._store.update_runner(runner):
            raise NotFound(
                f"runner {runner_id!r} of user {owner!r} not found", reason="RUNNER_NOT_FOUND", field="runner_id"
            )
        kept = frozenset(runner.labels)
        for stream in self._router.streams_of(owner):
            if stream.runner_id == runner.id and not stream.labels <= kept:
                self._router.close_stream(stream.id, "the runner's labels changed")
        return runner

    def delete(self, principal: Principal, user_id: str, runner_id: str) -> None:
        runner = self.get(principal, user_id, runner_id)
        self._store.delete_runner(runner.user_id, runner.id)
        self._router.close_runner(runner.user_id, runner.id)

    def live(self, runner: RunnerRecord) -> tuple[int, int]:
        """(open connections, total capacity) of a runner right now, on every replica."""
        workers = [w for w in self._router.queue.workers(runner.user_id) if w.runner_id == runner.id]
        return len(workers), sum(w.capacity for w in workers)

    # the runner's stream: the adapter holding it passes its id, and relays its messages

    def connect(
        self, principal: Principal, runner_id: str, capacity: int, labels: tuple[str, ...] = ()
    ) -> tuple[RunnerRecord, StreamInfo]:
        """Open a stream; `labels` (if any) narrow the registered labels for this connection."""
        runner = self.get(principal, "", runner_id)
        if not 1 <= capacity <= MAX_CAPACITY:
            raise InvalidArgument(f"capacity must be 1-{MAX_CAPACITY}, got {capacity}", field="hello.capacity")
        unknown = sorted(set(labels) - set(runner.labels))
        if unknown:
            raise InvalidArgument(
                f"runner {runner.id!r} announced labels {unknown} it is not registered with "
                f"(registered: {', '.join(runner.labels) or 'none'})",
                field="hello.labels",
            )
        serving = frozenset(labels or runner.labels)
        return runner, self._router.open_stream(runner.user_id, runner.id, serving, capacity)

    def next_message(self, stream_id: str, timeout: float) -> StreamMessage | None:
        """What to send the runner next (work, a withdrawal, or the end); None after `timeout` seconds."""
        return self._router.next_message(stream_id, timeout)

    def disconnect(self, stream_id: str, reason: str = "disconnected") -> None:
        """The stream ended (or must end): its unfinished items go to other runners."""
        self._router.close_stream(stream_id, reason)

    def forget(self, stream_id: str) -> None:
        """The adapter has closed the stream for good."""
        self._router.forget_stream(stream_id)

    def heartbeat(self, stream_id: str, draining: bool, working_on: tuple[str, ...] = ()) -> None:
        self._router.heartbeat(stream_id, draining, frozenset(working_on))

    def complete(self, stream_id: str, item_id: str, result: bytes) -> None:
        """A runner's answer, in the runner wire format (the first answer for an item wins)."""
        self._router.complete(stream_id, item_id, result)


def _checked_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    """Each label a valid id; duplicates dropped, order kept."""
    for i, label in enumerate(labels):
        validate_id(label, f"labels[{i}]")
    return tuple(dict.fromkeys(labels))
