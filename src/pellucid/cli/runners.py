"""`pellucid runner start|list`: serve a model from user code, see the registered runners."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pellucid.api import v1
from pellucid.cli.output import INTERRUPTED, OK, emit
from pellucid.cli.session import call_timeout, client_options, user
from pellucid.errors import AlreadyExists, NotFound, UserError


def runner_dict(runner: v1.Runner) -> dict[str, Any]:
    return {
        "id": runner.id,
        "labels": list(runner.labels),
        "description": runner.description,
        "connections": runner.connections,
        "capacity": runner.capacity,
    }


def load_runner_class(spec: str) -> type:
    """`path/to/file.py:ClassName` -> the class, loaded from that file."""
    import importlib.util

    from pellucid.client.runner import Runner

    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise UserError(f"{spec!r}: give the runner as path/to/file.py:ClassName")
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: no such file")
    module_spec = importlib.util.spec_from_file_location(file.stem, file)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(file.parent.resolve()))
    module_spec.loader.exec_module(module)
    cls = getattr(module, name, None)
    if isinstance(cls, type) and issubclass(cls, Runner):
        return cls
    if callable(cls) and not isinstance(cls, type):  # a plain function: served as an algorithm
        from pellucid.client.runner import function_runner

        return function_runner(cls, file.stem)
    raise UserError(f"{path} has no Runner subclass or function named {name!r}")


def register(args: argparse.Namespace, runner_id: str, labels: list[str]) -> None:
    """Create the runner with `labels`, or give an existing one exactly these labels."""
    client = user(args)
    labels = list(dict.fromkeys(labels))
    try:
        created = client.create_runner(runner_id, labels)
        emit(
            args.json,
            {"event": "registered", "runner": runner_dict(created)},
            f"registered runner {runner_id} with labels {','.join(labels) or '(none)'}",
        )
        return
    except AlreadyExists:
        pass
    before = list(client.runner(runner_id).labels)
    if before == labels:
        return
    updated = client.patch_runner(runner_id, labels=labels)
    emit(
        args.json,
        {"event": "labels_updated", "before": before, "runner": runner_dict(updated)},
        f"runner {runner_id}: labels changed from {','.join(before) or '(none)'} to {','.join(labels) or '(none)'}",
    )


def cmd_runner_start(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cls = load_runner_class(args.target)
    runner_id = args.runner_id or cls.__name__.lower()
    if args.labels is not None:
        register(args, runner_id, [label.strip() for label in args.labels.split(",") if label.strip()])
    runner = cls(
        runner_id=runner_id,
        num_parallel_polls=args.concurrency,
        base_url=args.api or "",
        pat=args.pat or "",
        profile=args.profile,
        timeout=call_timeout(args),
    )
    emit(
        args.json,
        {"event": "starting", "runner_id": runner_id, "concurrency": args.concurrency},
        f"runner {runner_id} starting ({args.concurrency} at a time; Ctrl-C finishes the items in hand, "
        "a second Ctrl-C stops at once)",
    )
    try:
        runner.start()
    except NotFound as exc:
        if args.labels is not None or exc.details.get("reason") != "RUNNER_NOT_FOUND":
            raise
        raise NotFound(
            f"{exc.message}, or pass --labels a,b to register it here",
            request_id=exc.request_id,
            details=exc.details,
            method=exc.method,
        ) from None
    except KeyboardInterrupt:  # before serving (loading the model): nothing in hand
        runner.stop(drain=False)
        return INTERRUPTED
    if runner.stopped_at_once:
        # items may still be running in the pool's threads: exit without waiting for them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)
    return OK


def cmd_runner_list(args: argparse.Namespace) -> int:
    runners = list(user(args).list_runners())
    emit(
        args.json,
        [runner_dict(r) for r in runners],
        "\n".join(f"{r.id}\t{','.join(r.labels) or '-'}\t{r.connections} connected" for r in runners),
    )
    return OK


def add_commands(commands: Any) -> None:
    runner = commands.add_parser("runner", help="serve a model; see your runners").add_subparsers(
        dest="runner_command", required=True
    )
    start = runner.add_parser("start", help="start a runner from user code: path/to/file.py:ClassName or :function")
    start.add_argument(
        "target",
        help="path/to/file.py:ClassName (a pellucid.client.runner.Runner subclass) or path/to/file.py:function "
        "(a plain function serving an algorithm: it takes and returns str, bytes or JSON values)",
    )
    start.add_argument(
        "--runner-id",
        default="",
        help="registered runner id (default: the class name, or for a function the file name, lowercased)",
    )
    start.add_argument("--concurrency", type=int, default=4, help="items run at once")
    start.add_argument(
        "--labels",
        default=None,
        help="comma-separated labels: register the runner with them, or change an existing "
        "runner's labels to exactly these (without --labels they stay as registered)",
    )
    start.add_argument("--log-level", default="info", help="debug logs one line per item")
    client_options(start)
    start.set_defaults(run=cmd_runner_start)
    listing = runner.add_parser("list", help="your registered runners, their labels and live connections")
    client_options(listing)
    listing.set_defaults(run=cmd_runner_list)
