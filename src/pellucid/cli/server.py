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
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pellucid.cli.output import emit

DEFAULT_PORT = 7317
EXIT_PORT_IN_USE = 6  # the port is taken; nothing was created


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def add_server_arguments(server: argparse.ArgumentParser) -> None:
    """Every flag of `pellucid server`."""
    server.add_argument("--data-dir", default="", help="where state lives (default: PELLUCID_HOME or ~/.pellucid)")
    server.add_argument(
        "--metadata",
        default="",
        metavar="URI",
        help="metadata store: sqlite:///path/file.sqlite3 or postgresql://user@host:5432/db"
        " (default: SQLite in the data dir)",
    )
    server.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; beyond loopback, use TLS (a warning is logged without it)",
    )
    server.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"default {DEFAULT_PORT}; 0 lets the OS pick a free port. "
        f"If it is in use, the server exits with code {EXIT_PORT_IN_USE} before touching the data dir",
    )
    server.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate (chain): serve TLS only")
    server.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    server.add_argument(
        "--tls-client-ca", type=Path, default=None, help="PEM CA: require client certificates it signed (mutual TLS)"
    )
    server.add_argument("--admin-user", default="admin", help="id of the first user, created on first start")
    server.add_argument(
        "--max-workers",
        type=_at_least(8),
        default=256,
        help="threads serving calls: each stream, runner connection and waiting predict holds one; "
        "together they may take three quarters",
    )
    server.add_argument(
        "--max-streams-per-user",
        type=_at_least(1),
        default=32,
        help="open upload/download streams per user; past it: RESOURCE_EXHAUSTED",
    )
    server.add_argument(
        "--max-predicts-per-user",
        type=_at_least(1),
        default=64,
        help="predicts per user waiting for or running on a runner; past it: RESOURCE_EXHAUSTED",
    )
    server.add_argument(
        "--max-input-batches-per-user",
        type=_at_least(1),
        default=32,
        help="PostInputs calls per user in flight (the server fetches their URLs); past it: RESOURCE_EXHAUSTED",
    )
    server.add_argument(
        "--max-runner-connections-per-user",
        type=_at_least(1),
        default=64,
        help="runner processes (Connect streams) per user; past it: RESOURCE_EXHAUSTED",
    )
    server.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on shutdown")
    server.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="fetch URL inputs from this machine and private networks too (off: callers could read them)",
    )
    server.add_argument(
        "--max-blob-bytes",
        type=_at_least(1),
        default=1 << 30,
        help="largest blob a caller may upload, in bytes (default 1 GiB)",
    )
    server.add_argument(
        "--blobs",
        default="",
        metavar="URI",
        help="where blobs live: file:///path (default: the data dir) or "
        "s3://bucket/prefix?endpoint_url=...&region=... (credentials from the AWS_* variables)",
    )
    server.add_argument(
        "--queue",
        default="",
        metavar="URI",
        help="where prediction items wait for runners: memory: (in this process, the default) or "
        "postgresql://user:password@host:port/database (one queue shared by replicas)",
    )
    server.add_argument("--log-level", default="info")
    server.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help='print readiness as one JSON line: {"event": "listening", "address": ..., "data_dir": ...}',
    )


def cmd_server(args: argparse.Namespace) -> int:
    from pellucid.client.config import default_home
    from pellucid.server.runtime import DataDirInUse, PellucidServer, PortInUse, ServerSettings, TlsSettingsError
    from pellucid.server.storage.registry import check_work_queue_uri

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_work_queue_uri(args.queue)
    except ValueError as exc:
        print(f"pellucid server: --queue: {exc}", file=sys.stderr)
        return 2
    settings = ServerSettings(
        data_dir=Path(args.data_dir) if args.data_dir else default_home(),
        host=args.host,
        port=args.port,
        admin_user_id=args.admin_user,
        max_workers=args.max_workers,
        allow_private_urls=args.allow_private_urls,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        max_streams_per_user=args.max_streams_per_user,
        max_predicts_per_user=args.max_predicts_per_user,
        max_input_batches_per_user=args.max_input_batches_per_user,
        max_runner_connections_per_user=args.max_runner_connections_per_user,
        max_blob_bytes=args.max_blob_bytes,
        blob_uri=args.blobs,
        queue_uri=args.queue,
        metadata_uri=args.metadata,
    )
    server = PellucidServer(settings)
    try:
        server.start()
    except PortInUse as exc:
        print(f"pellucid server: {exc}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    except (TlsSettingsError, ValueError) as exc:  # ValueError: a store URI this pellucid cannot open
        print(f"pellucid server: {exc}", file=sys.stderr)
        return 2
    except (DataDirInUse, OSError) as exc:  # e.g. a data dir or port this user may not use
        print(f"pellucid server: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.json:
        emit(
            True,
            {"event": "listening", "address": f"{settings.host}:{server.port}", "data_dir": str(server.data_dir.path)},
            "",
        )
    else:
        print(f"data dir {server.data_dir.path}", flush=True)
        if settings.tls:
            print(f"TLS on{', client certificates required' if settings.tls_client_ca else ''}", flush=True)
        print(f"listening on {settings.host}:{server.port}", flush=True)
    while not stop.wait(0.5):
        pass
    print("shutting down", flush=True)
    server.stop(grace=args.grace)
    return 0
