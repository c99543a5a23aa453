"""RunnerService: runner registrations, and the stream each runner process holds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.engine.errors import EngineError, InvalidArgument
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.translate.runners import runner_message, server_message

log = logging.getLogger("pellucid.server")


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
        fields: dict[str, tuple[str, ...] | str] = {"labels": tuple(r.labels), "description": r.description}
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
        runners = self.engine.runners
        runner, stream = runners.connect(
            principal(), first.hello.runner_id, first.hello.capacity, tuple(first.hello.labels)
        )
        log.info("runner %s connected (stream %s, capacity %d)", runner.id, stream.id, stream.capacity)
        failures: list[EngineError] = []  # a bad message ends the stream with its error
        reader = threading.Thread(
            target=self._read,
            args=(request_iterator, stream.id, failures),
            daemon=True,
            name=f"pellucid-runner-{runner.id}",
        )
        reader.start()
        try:
            yield v1.ServerMessage(
                welcome=v1.RunnerWelcome(
                    session_id=stream.id,
                    labels=sorted(stream.labels),
                    heartbeat_seconds=runners.heartbeat_seconds,
                )
            )
            while context.is_active():
                message = runners.next_message(stream.id, timeout=0.5)
                if message is None:
                    continue
                outgoing = server_message(message)
                if outgoing is None:  # the engine ended the stream
                    if failures:
                        raise failures[0]
                    return
                yield outgoing
        finally:
            runners.forget(stream.id)
            log.info("runner %s disconnected (stream %s)", runner.id, stream.id)

    def _read(self, request_iterator: Iterator[v1.RunnerMessage], stream_id: str, failures: list[EngineError]) -> None:
        runners = self.engine.runners
        try:
            for message in request_iterator:
                kind = message.WhichOneof("kind")
                if kind == "result":
                    runners.complete(stream_id, message.result.item_id, message.result.response.SerializeToString())
                elif kind == "heartbeat":
                    runners.heartbeat(stream_id, message.heartbeat.draining, tuple(message.heartbeat.item_ids))
        except grpc.RpcError:
            pass  # the stream ended: it is closed below
        except EngineError as exc:  # e.g. a message that does not decode
            failures.append(exc)
        finally:
            runners.disconnect(stream_id)
