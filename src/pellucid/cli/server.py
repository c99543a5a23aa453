"""`pellucid server`: run a standalone server that owns a data dir.

Its settings (TLS, limits, ports, stores ...) are rows of the table in server/settings.py, which
reads each from a flag, a PELLUCID_SERVER_* variable or a TOML file (--config); add one there.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from pellucid.cli.output import emit
from pellucid.server.settings import DEFAULT_PORT, SettingsError, add_arguments, resolve, server_settings

__all__ = ["DEFAULT_PORT", "add_server_arguments", "cmd_server"]

EXIT_PORT_IN_USE = 6  # the port is taken; nothing was created
EXIT_BAD_SETTINGS = 2  # a flag, variable or settings file key that cannot be used; nothing was created


def add_server_arguments(server: argparse.ArgumentParser) -> None:
    """Every flag of `pellucid server`: one per setting (server/settings.py), and --json."""
    add_arguments(server)
    server.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help='print readiness as one JSON line: {"event": "listening", "address": ..., "data_dir": ...}',
    )


def cmd_server(args: argparse.Namespace) -> int:
    from pellucid.client.config import default_home

    try:  # before anything is imported, opened or created
        values = resolve(vars(args))
    except SettingsError as exc:
        print(f"pellucid server: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    from pellucid.server.runtime import DataDirInUse, PellucidServer, PortInUse, TlsSettingsError

    logging.basicConfig(level=values["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = server_settings(values, default_home)
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
            {
                "event": "listening",
                "address": f"{settings.host}:{server.port}",
                "data_dir": str(server.data_dir.path),
                **({"http_address": f"{settings.host}:{server.http_port}"} if server.http else {}),
            },
            "",
        )
    else:
        print(f"data dir {server.data_dir.path}", flush=True)
        if settings.tls:
            print(f"TLS on{', client certificates required' if settings.tls_client_ca else ''}", flush=True)
        print(f"listening on {settings.host}:{server.port}", flush=True)
        if server.http is not None:
            print(f"HTTP on {settings.host}:{server.http_port} (deployments: /v1/deployments/<id>/forward)", flush=True)
    while not stop.wait(0.5):
        pass
    print("shutting down", flush=True)
    server.stop(grace=values["grace"])
    return 0
