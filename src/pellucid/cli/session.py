"""Options every client command takes, before or after its name, and the User they build."""

from __future__ import annotations

import argparse

from pellucid.client._transport import DEFAULT_TIMEOUT
from pellucid.client.user import User

# timeout None: each command's own default (call_timeout), DEFAULT_TIMEOUT for most
GLOBAL_DEFAULTS = {"api": "", "pat": "", "profile": None, "json": False, "timeout": None}


def positive_seconds(text: str) -> float:
    """argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above zero")
    return value


def client_options(
    parser: argparse.ArgumentParser,
    top_level: bool = False,
    *,
    json_flag: bool = True,
    timeout_default: float = DEFAULT_TIMEOUT,
) -> None:
    """--api, --pat, --profile, --timeout and --json. On a subcommand they default to
    nothing, so `pellucid --profile p users list` and `pellucid users list --profile p`
    mean the same."""
    default = None if top_level else argparse.SUPPRESS
    parser.add_argument(
        "--api", default=default, help="target, e.g. grpc://host:7000 (default: PELLUCID_API, the profile, else local)"
    )
    parser.add_argument("--pat", default=default, help="personal access token (default: PELLUCID_PAT or the profile)")
    parser.add_argument(
        "--profile",
        default=default,
        help="profile of ~/.config/pellucid/config.toml (default: PELLUCID_PROFILE, else the file's current_profile)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=default,
        metavar="SECONDS",
        help=f"deadline of each call (default {timeout_default:g})",
    )
    if json_flag:
        parser.add_argument(
            "--json",
            action="store_true",
            default=default,
            help="print data as JSON (and errors as a JSON object on stderr)",
        )
    if top_level:
        parser.set_defaults(**GLOBAL_DEFAULTS)


def call_timeout(args: argparse.Namespace, default: float = DEFAULT_TIMEOUT) -> float:
    """--timeout if given, else the command's default deadline."""
    return args.timeout if args.timeout is not None else default


def user(args: argparse.Namespace) -> User:
    """The user the command's credentials resolve to (no network I/O yet)."""
    return User(base_url=args.api or "", pat=args.pat or "", profile=args.profile, timeout=call_timeout(args))
