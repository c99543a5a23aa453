"""The `pellucid` command: run a server, manage users, tokens and runners.

    pellucid server --data-dir DIR [--host 127.0.0.1] [--port 7317] [--tls-cert FILE --tls-key FILE] ...
    pellucid users create USER_ID [--admin]     (prints the new PAT as its last line)
    pellucid users list
    pellucid whoami
    pellucid runner start path/to/file.py:ClassName [--runner-id ID] [--concurrency N] [--labels a,b]
    pellucid runner list
    pellucid run OWNER/NAME[/VERSION] -d INPUT   (call an algorithm; see `pellucid help run`)
    pellucid auth [--profile NAME] | auth list | auth remove NAME
    pellucid help [COMMAND]
    pellucid ls [-l] [data://...] | mkdir | rmdir [-f] | rm | cp [-r] [-c N] SRC... DEST | cat   (hosted data)
    pellucid --version

Client commands take --api, --pat, --profile, --timeout and --json before or after their
name; --json prints data as JSON on stdout and errors as a JSON object on stderr. The exit
codes are in `pellucid.cli.output` (0 ok, 1 other, 2 usage, 3 not authenticated or denied,
4 not found, 5 server unreachable or, for cp, some files failed, 6 the server's port is in
use). One module per command group: server, users, runners, algo (run), auth, data (ls, mkdir,
rmdir, rm, cp, cat).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pellucid import __version__
from pellucid.cli import algo, auth, data, runners, users
from pellucid.cli.output import EXIT_CODES_DOC, INTERRUPTED, OK, USAGE, exit_code, report_error
from pellucid.cli.server import add_server_arguments, cmd_server
from pellucid.cli.session import client_options
from pellucid.errors import PellucidError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pellucid",
        description="pellucid: ML data and inference platform",
        epilog=EXIT_CODES_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pellucid {__version__}")
    client_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser("server", help="run a standalone server that owns a data dir")
    add_server_arguments(server)
    server.set_defaults(run=cmd_server)

    users.add_commands(commands)
    runners.add_commands(commands)
    algo.add_commands(commands)
    auth.add_commands(commands)
    data.add_commands(commands)  # ls, mkdir, rmdir, rm, cp, cat (hosted data)
    add_help_command(commands, parser)
    return parser


def add_help_command(commands: Any, parser: argparse.ArgumentParser) -> None:
    """`pellucid help [COMMAND]`: the same text as --help, exit codes included."""
    helper = commands.add_parser("help", help="print the help of pellucid or of one command, and the exit codes")
    helper.add_argument("topic", nargs="*", metavar="COMMAND", help="e.g. run, or runner start")

    def show(args: argparse.Namespace) -> int:
        target = parser
        for word in args.topic:
            choices = next(
                (a.choices for a in target._actions if isinstance(a, argparse._SubParsersAction)),
                None,
            )
            if not choices or word not in choices:
                known = ", ".join(sorted(choices or {}))
                print(f"pellucid help: no command {word!r} (commands: {known})", file=sys.stderr)
                return USAGE
            target = choices[word]
        target.print_help()
        if target is not parser:
            print(f"\n{EXIT_CODES_DOC}")
        return OK

    helper.set_defaults(run=show)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PellucidError as exc:
        code = exit_code(exc)
        report_error(args.json, exc, code)
        return code
    except KeyboardInterrupt:
        return INTERRUPTED
