"""`pellucid server`: run a standalone server that owns a data dir.

Its arguments are all defined in `add_server_arguments`, and what they become in
`cmd_server`: flags for the server (TLS, limits, ports ...) go there and nowhere else.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pellucid.cli.output import emit


def add_server_arguments(server: argparse.ArgumentParser) -> None:
    """Every flag of `pellucid server`."""
    server.add_argument("--data-dir", default="", help="where state lives (default: PELLUCID_HOME or ~/.pellucid)")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=0, help="0 lets the OS pick a free port")
    server.add_argument("--admin-user", default="admin", help="id of the first user, created on first start")
    server.add_argument("--max-workers", type=int, default=256,
                        help="threads serving calls: each connected runner stream and each waiting predict holds one")
    server.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on shutdown")
    server.add_argument("--allow-private-urls", action="store_true",
                        help="fetch URL inputs from this machine and private networks too (off: callers could read them)")
    server.add_argument("--log-level", default="info")
    server.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help='print readiness as one JSON line: {"event": "listening", "address": ..., "data_dir": ...}')


def cmd_server(args: argparse.Namespace) -> int:
    from pellucid.client.config import default_home
    from pellucid.server.runtime import DataDirInUse, PellucidServer, ServerSettings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServerSettings(
        data_dir=Path(args.data_dir) if args.data_dir else default_home(),
        host=args.host, port=args.port, admin_user_id=args.admin_user, max_workers=args.max_workers,
        allow_private_urls=args.allow_private_urls,
    )
    server = PellucidServer(settings)
    try:
        server.start()
    except DataDirInUse as exc:
        print(f"pellucid server: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.json:
        emit(True, {"event": "listening", "address": f"{settings.host}:{server.port}",
                    "data_dir": str(server.data_dir.path)}, "")
    else:
        print(f"data dir {server.data_dir.path}", flush=True)
        print(f"listening on {settings.host}:{server.port}", flush=True)
    while not stop.wait(0.5):
        pass
    print("shutting down", flush=True)
    server.stop(grace=args.grace)
    return 0
