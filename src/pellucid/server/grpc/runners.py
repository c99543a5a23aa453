"""RunnerService: runner registrations, and the stream each runner process holds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.engine.errors import EngineError, InvalidArgument
from pellucid.server.engine.routing import CLOSE, Cancel, Dispatch, Session
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_timestamp
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.records import RunnerRecord

log = logging.getLogger("pellucid.server")


def runner_message(runner: RunnerRecord, live: tuple[int, int] = (0, 0)) -> v1.Runner:
    return v1.Runner(
        id=runner.id,
        user_id=runner.user_id,
        labels=list(runner.labels),
        description=runner.description,
        created_at=to_timestamp(runner.created_at),
        connections=live[0],
        capacity=live[1],
    )


class RunnerServicer(v1.RunnerServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.Runner)
    def CreateRunner(self, request: v1.CreateRunnerRequest, context: grpc.ServicerContext) -> v1.Runner:
        r = request.runner
        return runner_message(
            self.engine.runners.create(principal(), request.user_id, r.id, tuple(r.labels), r.description)
        )

    def GetRunner(self, request: v1.GetRunnerRequest, context: grpc.ServicerContext) -> v1.Runner:
        runner = self.engine.runners.get(principal(), request.user_id, request.runner_id)
        return runner_message(runner, self.engine.runners.live(runner))

    def ListRunners(self, request: v1.ListRunnersRequest, context: grpc.ServicerContext) -> v1.ListRunnersResponse:
        runners, token = self.engine.runners.list(
            principal(), request.user_id, page_request(request), tuple(request.labels)
        )
        return v1.ListRunnersResponse(
            runners=[runner_message(r, self.engine.runners.live(r)) for r in runners], next_page_token=token
        )

    @replayable(v1.Runner)
    def PatchRunner(self, request: v1.PatchRunnerRequest, context: grpc.ServicerContext) -> v1.Runner:
        r = request.runner
        fields = {"labels": tuple(r.labels), "description": r.description}
        changes = {path: fields.get(path, ()) for path in request.update_mask.paths}
        runner = self.engine.runners.patch(principal(), request.user_id, r.id, changes)
        return runner_message(runner, self.engine.runners.live(runner))

    @replayable(v1.DeleteRunnerResponse)
    def DeleteRunner(self, request: v1.DeleteRunnerRequest, context: grpc.ServicerContext) -> v1.DeleteRunnerResponse:
        self.engine.runners.delete(principal(), request.user_id, request.runner_id)
        return v1.DeleteRunnerResponse()

    def Connect(
        self, request_iterator: Iterator[v1.RunnerMessage], context: grpc.ServicerContext
    ) -> Iterator[v1.ServerMessage]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "hello":
            raise InvalidArgument("a runner stream starts with a RunnerHello", field="hello")
        runner, session = self.engine.runners.connect(
            principal(), first.hello.runner_id, first.hello.capacity, tuple(first.hello.labels)
        )
        log.info("runner %s connected (session %s, capacity %d)", runner.id, session.id, session.capacity)
        failures: list[EngineError] = []  # a bad message ends the stream with its error
        reader = threading.Thread(
            target=self._read,
            args=(request_iterator, session, failures),
            daemon=True,
            name=f"pellucid-runner-{runner.id}",
        )
        reader.start()
        try:
            yield v1.ServerMessage(
                welcome=v1.RunnerWelcome(
                    session_id=session.id,
                    labels=sorted(session.labels),
                    heartbeat_seconds=self.engine.runners.heartbeat_seconds,
                )
            )
            while context.is_active():
                message = session.next_message(timeout=0.5)
                if message is None:
                    continue
                if message is CLOSE:
                    if failures:
                        raise failures[0]
                    return
                yield _server_message(message)
        finally:
            self.engine.runners.disconnect(session)
            log.info("runner %s disconnected (session %s)", runner.id, session.id)

    def _read(
        self, request_iterator: Iterator[v1.RunnerMessage], session: Session, failures: list[EngineError]
    ) -> None:
        try:
            for message in request_iterator:
                kind = message.WhichOneof("kind")
                if kind == "result":
                    self.engine.runners.complete(
                        session, message.result.item_id, message.result.response.SerializeToString()
                    )
                elif kind == "heartbeat":
                    self.engine.runners.heartbeat(
                        session, message.heartbeat.draining, tuple(message.heartbeat.item_ids)
                    )
        except grpc.RpcError:
            pass  # the stream ended: the session is closed below
        except EngineError as exc:  # e.g. a message that does not decode
            failures.append(exc)
        finally:
            self.engine.runners.disconnect(session)


def _server_message(message: object) -> v1.ServerMessage:
    if isinstance(message, Dispatch):
        work = v1.WorkItem.FromString(message.payload)
        work.item_id = message.item_id
        lease = Timestamp()
        lease.FromNanoseconds(int(message.lease_deadline * 1e9))
        work.lease_deadline.CopyFrom(lease)
        return v1.ServerMessage(work=work)
    assert isinstance(message, Cancel)
    return v1.ServerMessage(cancel=v1.CancelItem(item_id=message.item_id, reason=message.reason))
