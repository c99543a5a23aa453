"""Runner: serve a model from any machine that reaches the server.

Subclass it, implement `run_input` (or `run_inputs` for a whole request at once), and call
`start()` (or run `pellucid runner start file.py:ClassName`). The runner holds one stream
to the server, receives work items, runs them on `num_parallel_polls` threads and sends the
outputs back; heartbeats keep its items leased. It reconnects with backoff when the server
goes away (given several replicas, `grpc://host1:port1,host2:port2`, it keeps to the first
that answers and moves to the next when that one fails), and on SIGTERM or Ctrl-C it takes no new work, finishes what it holds and exits
(a second Ctrl-C stops it at once).

A plain function serves an algorithm (pellucid.client.algo): `function_runner(apply)`, or
`pellucid runner start hello.py:apply`. Any runner given an algorithm call (an input with a
content type) returns what `run_input` printed and, if it raised, its stack trace.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import signal
import threading
import time
import traceback
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from pellucid.api import v1
from pellucid.client._transport import get_connection
from pellucid.client.algo import decode_data, encode_input, serving_call
from pellucid.client.base import BaseClient
from pellucid.errors import ApiError, UserError, from_rpc_error

log = logging.getLogger("pellucid.runner")

_END = object()


MAX_FETCH_BYTES = 64 * 1024 * 1024


def fetch_media(item: v1.Input, timeout: float = 20.0) -> None:
    """Fill in the bytes of media given by URL (predict_by_url), so models only see bytes."""
    for kind in ("image", "video", "audio"):
        media = getattr(item.data, kind)
        if media.url and not media.base64:
            if not media.url.lower().startswith(("http://", "https://")):
                raise ValueError(f"{kind} url {media.url!r} is not http(s)")
            try:
                with urllib.request.urlopen(media.url, timeout=timeout) as response:
                    data = response.read(MAX_FETCH_BYTES + 1)
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot fetch {media.url}: {exc}") from None
            if len(data) > MAX_FETCH_BYTES:
                raise ValueError(f"{media.url} is larger than {MAX_FETCH_BYTES} bytes")
            media.base64 = data


def _failure(exc: BaseException) -> v1.Status:
    code = v1.Status.INVALID_ARGUMENT if isinstance(exc, (ValueError, TypeError, UnicodeError)) else v1.Status.INTERNAL
    return v1.Status(code=code, message=f"{type(exc).__name__}: {exc}")


class Runner(BaseClient):
    """Base class of remote inference runners.

    Args:
        runner_id: a runner registered with `User.create_runner(runner_id, labels)`; its labels
            decide which model versions it serves.
        num_parallel_polls: how many items it runs at once (its capacity).
        check_runner_exists: check the registration when `start()` is called.
        labels (keyword): serve with only these of the registered labels (default: all of them).
    """

    def __init__(
        self,
        runner_id: str,
        user_id: str = "",
        check_runner_exists: bool = True,
        base_url: str = "",
        pat: str = "",
        token: str = "",
        num_parallel_polls: int = 4,
        **kwargs: Any,
    ) -> None:
        if not runner_id:
            raise UserError("Runner needs a runner_id (register one with User.create_runner)")
        if not isinstance(num_parallel_polls, int) or num_parallel_polls < 1:
            raise UserError(f"num_parallel_polls must be a positive integer, got {num_parallel_polls!r}")
        self.labels = list(kwargs.pop("labels", None) or [])
        BaseClient.__init__(self, user_id, base_url, pat, token, kwargs.pop("root_certificates_path", None), **kwargs)
        # one stream, to the first replica of the target that answers; the next one when it fails
        self._connection = get_connection(self._connection.settings, balance="pick_first")
        self.runner_id = runner_id
        self.check_runner_exists = check_runner_exists
        self.num_parallel_polls = num_parallel_polls
        self.items_done = 0
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[str, float] = {}
        self._cancelled: set[str] = set()
        self._outbox: queue.Queue[object] | None = None
        self._connected = threading.Event()

    # what subclasses implement

    def load_model(self) -> None:
        """Called once by start(), before the first item: load weights, warm up."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        """Compute the output for one input; `output_info.params` holds the inference parameters."""
        raise NotImplementedError(f"{type(self).__name__} must implement run_input (or run_inputs)")

    def run_inputs(self, inputs: list[v1.Input], output_info: v1.OutputInfo) -> list[v1.Output]:
        """Compute the outputs of a whole request. The default runs run_input on each input;
        an exception fails that input alone."""
        outputs = []
        for item in inputs:
            if item.data.content_type:  # an algorithm call: its stdout and stack trace go back with it
                outputs.append(self._run_algorithm_call(item, output_info))
                continue
            try:
                fetch_media(item)
                output = self.run_input(item, output_info)
                if not isinstance(output, v1.Output):
                    raise TypeError(f"run_input returned {type(output).__name__}, not an Output")
            except Exception as exc:  # noqa: BLE001 - the input's failure is reported in its status
                log.debug("input %s failed: %s", item.id, exc)
                output = v1.Output(status=_failure(exc))
            outputs.append(output)
        return outputs

    def _run_algorithm_call(self, item: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        """run_input on an algorithm call (its input's id is the call id), with what it prints
        captured, and its stack trace if it raises."""
        with serving_call(item.id, self._connection) as printed:
            try:
                output = self.run_input(item, output_info)
                if not isinstance(output, v1.Output):
                    raise TypeError(f"run_input returned {type(output).__name__}, not an Output")
            except Exception as exc:  # noqa: BLE001 - the caller gets it as an AlgoException
                log.debug("algorithm call %s failed: %s", item.id, exc)
                output = v1.Output(status=_failure(exc))
                output.data.stack_trace = traceback.format_exc()
        output.data.stdout = "".join(printed)
        return output

    # serving

    def start(self) -> None:
        """Serve until stop() is called, SIGTERM or Ctrl-C; reconnects when the server goes away.

        SIGTERM and a first Ctrl-C drain (no new work; the items in hand are finished and
        answered); a second Ctrl-C stops at once (`stopped_at_once` is then True, and the
        items still running are left to the server to give to other runners).
        """
        if self.check_runner_exists:
            self._call(
                v1.RunnerServiceStub, "GetRunner", v1.GetRunnerRequest(user_id=self._user_id, runner_id=self.runner_id)
            )
        self.load_model()
        previous = self._install_signal_handlers()
        # one pool for the runner's life: losing a stream must not wait for the items it was running
        pool = ThreadPoolExecutor(self.num_parallel_polls, thread_name_prefix=f"runner-{self.runner_id}")
        try:
            self._serve_until_stopped(pool)
        finally:
            pool.shutdown(wait=not self._stop.is_set(), cancel_futures=self._stop.is_set())
            for signum, handler in previous.items():
                if handler is not None:  # None: installed outside Python, nothing to put back
                    signal.signal(signum, handler)
        log.info("runner %s stopped after %d items", self.runner_id, self.items_done)

    def _serve_until_stopped(self, pool: ThreadPoolExecutor) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                self._serve_stream(pool)
                backoff = 0.0
            except (ApiError, grpc.RpcError) as exc:
                if self._stop.is_set():
                    break
                error = from_rpc_error(exc, "Connect") if isinstance(exc, grpc.RpcError) else exc
                if error.code in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    raise error from None
                backoff = min(5.0, max(0.2, backoff * 2))
                pause = random.uniform(backoff / 2, backoff)
                log.warning("runner %s lost its stream (%s); reconnecting in %.1fs", self.runner_id, error, pause)
                self._connection._follow_local_owner()
                self._stop.wait(pause)
            if self._draining.is_set():
                break

    def stop(self, drain: bool = True) -> None:
        """Stop serving: with drain, take no new work and finish the items in hand first."""
        self._draining.set()
        if not drain:
            self._stop.set()
            self._end_stream()

    def wait_connected(self, timeout: float) -> bool:
        """True once the stream is open (for tests and embedding)."""
        return self._connected.wait(timeout)

    @property
    def stopped_at_once(self) -> bool:
        """True if stop(drain=False) (or a second Ctrl-C) ended serving: items may still be running."""
        return self._stop.is_set()

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM drains; SIGINT drains the first time and stops at once the second. Returns the
        handlers replaced, to put back when serving ends."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_interrupt(signum: int, frame: object) -> None:
            if self._draining.is_set():
                log.warning("runner %s: stopping at once", self.runner_id)
                self.stop(drain=False)
                return
            busy = len(self._in_flight)  # no lock: the interrupted main thread may hold it
            log.warning(
                "runner %s: draining, finishing %d item(s) in hand; Ctrl-C again to stop at once", self.runner_id, busy
            )
            self.stop(drain=True)

        def on_terminate(signum: int, frame: object) -> None:
            log.info("runner %s: SIGTERM, draining", self.runner_id)
            self.stop(drain=True)

        return {
            signal.SIGTERM: signal.signal(signal.SIGTERM, on_terminate),
            signal.SIGINT: signal.signal(signal.SIGINT, on_interrupt),
        }

    def _end_stream(self) -> None:
        outbox = self._outbox
        if outbox is not None:
            outbox.put(_END)

    def _requests(self, outbox: queue.Queue[object]) -> Iterator[v1.RunnerMessage]:
        while True:
            message = outbox.get()
            if message is _END:
                return
            yield message  # type: ignore[misc]

    def _serve_stream(self, pool: ThreadPoolExecutor) -> None:
        outbox: queue.Queue[object] = queue.Queue()
        outbox.put(
            v1.RunnerMessage(
                hello=v1.RunnerHello(runner_id=self.runner_id, capacity=self.num_parallel_polls, labels=self.labels)
            )
        )
        self._outbox = outbox
        stream = self._connection.stub(v1.RunnerServiceStub).Connect(self._requests(outbox))
        heartbeat_every = [1.0]
        ended = threading.Event()

        def beat() -> None:
            while not ended.wait(heartbeat_every[0] / 2):
                with self._lock:
                    busy = list(self._in_flight)
                draining = self._draining.is_set()
                outbox.put(v1.RunnerMessage(heartbeat=v1.Heartbeat(item_ids=busy, draining=draining)))
                if draining and not busy:
                    outbox.put(_END)  # drained: close our side; the server then closes its side
                    return

        heart = threading.Thread(target=beat, daemon=True, name="runner-heartbeat")
        try:
            for message in stream:
                kind = message.WhichOneof("kind")
                if kind == "welcome":
                    heartbeat_every[0] = message.welcome.heartbeat_seconds or 1.0
                    log.info(
                        "runner %s connected (labels %s, %d at a time)",
                        self.runner_id,
                        ", ".join(message.welcome.labels) or "none",
                        self.num_parallel_polls,
                    )
                    self._connected.set()
                    heart.start()
                elif kind == "work":
                    with self._lock:
                        self._in_flight[message.work.item_id] = time.monotonic()
                    pool.submit(self._run_item, message.work, outbox)
                elif kind == "cancel":
                    with self._lock:
                        if message.cancel.item_id in self._in_flight:  # finished items need no note
                            self._cancelled.add(message.cancel.item_id)
                    log.debug("item %s cancelled: %s", message.cancel.item_id, message.cancel.reason)
        finally:
            ended.set()
            self._connected.clear()
            outbox.put(_END)
            with self._lock:  # items still running belong to the lost stream: the server has given them to others
                self._in_flight.clear()
                self._cancelled.clear()

    def _run_item(self, work: v1.WorkItem, outbox: queue.Queue[object]) -> None:
        started = time.perf_counter()
        inputs = list(work.request.inputs)
        method = work.method or "predict"
        try:
            if method == "predict":
                outputs = self.run_inputs(inputs, work.output_info)
            else:
                handler = getattr(self, f"run_{method}", None)
                if handler is None:
                    outputs = [
                        v1.Output(
                            status=v1.Status(
                                code=v1.Status.UNIMPLEMENTED,
                                message=f"runner {self.runner_id} has no method {method!r}",
                            )
                        )
                        for _ in inputs
                    ]
                else:
                    outputs = handler(inputs, work.output_info)
            if len(outputs) != len(inputs):
                raise ValueError(f"{len(outputs)} outputs for {len(inputs)} inputs")
        except Exception as exc:  # noqa: BLE001 - a failing batch method fails each of its inputs, with the reason
            outputs = [v1.Output(status=_failure(exc)) for _ in inputs]
        for item, output in zip(inputs, outputs):
            output.input.id = item.id  # the server applies the output config (min_value, max_concepts ...)
        result = v1.RunnerMessage(
            result=v1.WorkResult(item_id=work.item_id, response=v1.PostModelOutputsResponse(outputs=outputs))
        )
        with self._lock:  # queue the result before the item stops counting as busy, so a drain cannot end first
            cancelled = work.item_id in self._cancelled
            if not cancelled:
                outbox.put(result)
            self._in_flight.pop(work.item_id, None)
            self._cancelled.discard(work.item_id)
            self.items_done += 1
        failed = sum(o.status.code != v1.Status.OK for o in outputs)
        log.debug(
            "item %s: %s on %d inputs (%d failed) in %.1f ms%s",
            work.item_id,
            method,
            len(inputs),
            failed,
            (time.perf_counter() - started) * 1000,
            " (cancelled, not sent)" if cancelled else "",
        )


class FunctionRunner(Runner):
    """Serves a plain function as an algorithm: `function(input)` takes and returns a str (text),
    bytes (binary) or a JSON value. `pellucid runner start hello.py:apply` builds one."""

    function: Any = None

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        data = input.data
        if data.content_type:
            value = decode_data(data)
        elif data.HasField("text"):  # a plain predict of the model: its text, else its media's bytes
            value = data.text.raw
        else:
            fetch_media(input)
            media = data.image.base64 or data.video.base64 or data.audio.base64
            value = bytes(media)
        function = type(self).function
        result = function(value)
        if not isinstance(result, (str, bytes, bytearray, memoryview)):
            try:
                json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as exc:
                name = getattr(function, "__name__", "the function")
                raise TypeError(
                    f"{name} returned a {type(result).__name__} that is not a JSON value ({exc}): "
                    "return a str, bytes, or JSON values (dict, list, number, bool, None)"
                ) from None
        return v1.Output(data=encode_input(result))


def function_runner(function: Any, name: str = "") -> type[FunctionRunner]:
    """A FunctionRunner subclass serving `function`."""
    if not callable(function):
        raise UserError(f"{function!r} is not callable")
    return type(
        name or f"{getattr(function, '__name__', 'function')}_runner",
        (FunctionRunner,),
        {"function": staticmethod(function)},
    )
