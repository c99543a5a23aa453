"""The `pellucid` command: run a server, manage users and tokens.

    pellucid server --data-dir DIR [--host 127.0.0.1] [--port 7317] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
                    [--max-streams-per-user N] ...
    pellucid users create USER_ID [--admin]     (prints the new PAT as its last line)
    pellucid users list
    pellucid whoami
    pellucid runner start path/to/file.py:ClassName [--runner-id ID] [--concurrency N] [--labels a,b]
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

from pellucid.errors import PellucidError, UserError


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default="", help="target (default: PELLUCID_API, the profile, else local)")
    parser.add_argument("--pat", default="", help="personal access token (default: PELLUCID_PAT or the profile)")
    parser.add_argument("--profile", default=None, help="profile of ~/.config/pellucid/config.toml")


def _user(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from pellucid.client.user import User

    return User(base_url=args.api, pat=args.pat, profile=args.profile)


DEFAULT_PORT = 7317
EXIT_PORT_IN_USE = 6  # `pellucid server`: the port is taken; nothing was created


def cmd_server(args: argparse.Namespace) -> int:
    from pellucid.client.config import default_home
    from pellucid.server.runtime import DataDirInUse, PellucidServer, PortInUse, ServerSettings, TlsSettingsError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServerSettings(
        data_dir=Path(args.data_dir) if args.data_dir else default_home(),
        host=args.host, port=args.port, admin_user_id=args.admin_user, max_workers=args.max_workers,
        allow_private_urls=args.allow_private_urls,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        max_streams_per_user=args.max_streams_per_user, max_predicts_per_user=args.max_predicts_per_user,
        max_runner_connections_per_user=args.max_runner_connections_per_user,
        max_blob_bytes=args.max_blob_bytes,
    )
    server = PellucidServer(settings)
    try:
        server.start()
    except PortInUse as exc:
        print(f"pellucid server: {exc}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    except TlsSettingsError as exc:
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
    print(f"data dir {server.data_dir.path}", flush=True)
    if settings.tls:
        print(f"TLS on{', client certificates required' if settings.tls_client_ca else ''}", flush=True)
    print(f"listening on {settings.host}:{server.port}", flush=True)
    while not stop.wait(0.5):
        pass
    print("shutting down", flush=True)
    server.stop(grace=args.grace)
    return 0


def cmd_users_create(args: argparse.Namespace) -> int:
    created = _user(args).create_user(args.user_id, is_admin=args.admin)
    print(f"created user {created.user.id}{' (admin)' if created.user.is_admin else ''}")
    print(f"PAT id {created.pat.token.id}; the token below is shown only once:")
    print(created.pat.secret)
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    for user in _user(args).list_users():
        print(f"{user.id}\t{'admin' if user.is_admin else 'user'}")
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    info = _user(args).get_user_info()
    print(f"{info.id}{' (admin)' if info.is_admin else ''}")
    return 0


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
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise UserError(f"{path} has no Runner subclass named {name!r}")
    return cls


def cmd_runner_start(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cls = load_runner_class(args.target)
    runner_id = args.runner_id or cls.__name__.lower()
    if args.labels is not None:
        from pellucid.errors import AlreadyExists

        try:
            _user(args).create_runner(runner_id, [label for label in args.labels.split(",") if label])
            print(f"registered runner {runner_id} with labels {args.labels}", flush=True)
        except AlreadyExists:
            pass
    runner = cls(runner_id=runner_id, num_parallel_polls=args.concurrency, base_url=args.api, pat=args.pat,
                 profile=args.profile)
    print(f"runner {runner_id} starting ({args.concurrency} at a time)", flush=True)
    try:
        runner.start()
    except KeyboardInterrupt:
        runner.stop(drain=False)
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pellucid", description="pellucid: ML data and inference platform")
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser("server", help="run a standalone server that owns a data dir")
    server.add_argument("--data-dir", default="", help="where state lives (default: PELLUCID_HOME or ~/.pellucid)")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; beyond loopback, use TLS (a warning is logged without it)")
    server.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"default {DEFAULT_PORT}; 0 lets the OS pick a free port. "
                             f"If it is in use, the server exits with code {EXIT_PORT_IN_USE} before touching the data dir")
    server.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate (chain): serve TLS only")
    server.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    server.add_argument("--tls-client-ca", type=Path, default=None,
                        help="PEM CA: require client certificates it signed (mutual TLS)")
    server.add_argument("--admin-user", default="admin", help="id of the first user, created on first start")
    server.add_argument("--max-workers", type=_at_least(8), default=256,
                        help="threads serving calls: each stream, runner connection and waiting predict holds one; "
                             "together they may take three quarters")
    server.add_argument("--max-streams-per-user", type=_at_least(1), default=32,
                        help="open upload/download streams per user; past it: RESOURCE_EXHAUSTED")
    server.add_argument("--max-predicts-per-user", type=_at_least(1), default=64,
                        help="predicts per user waiting for or running on a runner; past it: RESOURCE_EXHAUSTED")
    server.add_argument("--max-runner-connections-per-user", type=_at_least(1), default=64,
                        help="runner processes (Connect streams) per user; past it: RESOURCE_EXHAUSTED")
    server.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on shutdown")
    server.add_argument("--allow-private-urls", action="store_true",
                        help="fetch URL inputs from this machine and private networks too (off: callers could read them)")
    server.add_argument("--max-blob-bytes", type=int, default=1 << 30,
                        help="largest blob a caller may upload, in bytes (default 1 GiB)")
    server.add_argument("--log-level", default="info")
    server.set_defaults(run=cmd_server)

    users = commands.add_parser("users", help="manage users (admins)").add_subparsers(dest="users_command", required=True)
    create = users.add_parser("create", help="create a user and print its first PAT")
    create.add_argument("user_id")
    create.add_argument("--admin", action="store_true", help="make the new user an admin")
    _client_options(create)
    create.set_defaults(run=cmd_users_create)
    listing = users.add_parser("list", help="list users")
    _client_options(listing)
    listing.set_defaults(run=cmd_users_list)

    runner = commands.add_parser("runner", help="serve a model").add_subparsers(dest="runner_command", required=True)
    start = runner.add_parser("start", help="start a runner from user code: path/to/file.py:ClassName")
    start.add_argument("target", help="path/to/file.py:ClassName (a pellucid.client.runner.Runner subclass)")
    start.add_argument("--runner-id", default="", help="registered runner id (default: the class name, lowercased)")
    start.add_argument("--concurrency", type=int, default=4, help="items run at once")
    start.add_argument("--labels", default=None,
                       help="comma-separated labels: register the runner with them first if it does not exist")
    start.add_argument("--log-level", default="info", help="debug logs one line per item")
    _client_options(start)
    start.set_defaults(run=cmd_runner_start)

    whoami = commands.add_parser("whoami", help="print the user the credentials belong to")
    _client_options(whoami)
    whoami.set_defaults(run=cmd_whoami)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PellucidError as exc:
        print(f"pellucid: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
