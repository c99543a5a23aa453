"""`pellucid auth [--profile NAME]`, `pellucid auth list`, `pellucid auth remove NAME`: the
profiles of the config file (pellucid.client.config) that every command and SDK object reads.

`pellucid auth` asks for the API address and token (or takes --api and --pat, for scripts),
checks them by asking the server who the token belongs to, and only then writes the profile,
to a file of mode 0600 (replaced atomically: a reader never sees half a file).
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from pellucid.cli.output import NOT_FOUND, OK, emit
from pellucid.cli.session import call_timeout, client_options
from pellucid.client.config import ENV_PROFILE, config_path, tomllib
from pellucid.client.user import User
from pellucid.errors import UserError

DEFAULT_PROFILE = "default"
DEFAULT_ADDRESS = "grpc://127.0.0.1:7317"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def read_config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read the pellucid config file {path}: {exc}") from None


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _string(name)


def _string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item, where) for item in value) + "]"
    raise UserError(
        f"{where} holds a {type(value).__name__}: pellucid auth cannot write it back, edit the file by hand"
    )


def _table(prefix: str, table: dict[str, Any], lines: list[str]) -> None:
    values = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    if prefix and (values or not table):
        lines += ["", f"[{prefix}]"]
    lines += [f"{_key(k)} = {_value(v, f'{prefix}.{k}' if prefix else k)}" for k, v in values]
    for k, v in table.items():
        if isinstance(v, dict):
            _table(f"{prefix}.{_key(k)}" if prefix else _key(k), v, lines)


def dump_config(data: dict[str, Any]) -> str:
    """The config as TOML (what tomllib read, written back: values, lists and tables)."""
    lines: list[str] = []
    _table("", data, lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def write_config(path: Path, data: dict[str, Any]) -> None:
    """Replace the file atomically, mode 0600 (it holds tokens), in a directory only its owner reads."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(dump_config(data))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _ask(prompt: str, secret: bool = False) -> str:
    """One answer from the terminal (a secret without echo) or, for scripts, a line of stdin."""
    if secret and sys.stdin.isatty():
        return getpass.getpass(prompt)
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise UserError(f"no answer to {prompt.strip()!r} (stdin ended): pass --api and --pat instead")
    return line.strip()


def cmd_auth(args: argparse.Namespace) -> int:
    name = args.profile or os.environ.get(ENV_PROFILE) or DEFAULT_PROFILE
    path = config_path()
    config = read_config(path)
    current = dict((config.get("profiles") or {}).get(name) or {})
    interactive = not args.api and not args.pat
    if interactive:
        print(f"Configuring authentication for profile {name!r} in {path}", file=sys.stderr)
    address = args.api or ""
    if not address:
        default = current.get("api") or DEFAULT_ADDRESS
        address = _ask(f"API address [{default}]: ") or default
    token = args.pat or ""
    if not token:
        token = _ask("API token: ", secret=True)
        if not token:
            raise UserError("no token given: create one with `pellucid users create` (admins) or ask your admin")
    certificates = args.ca_cert
    if certificates is None and interactive:
        certificates = _ask("(optional) path to a CA certificate []: ") or ""
    # check before writing anything: a wrong address or token leaves the file as it was
    client = User(base_url=address, pat=token, root_certificates_path=certificates or None, timeout=call_timeout(args))
    try:
        info = client.get_user_info()
    finally:
        client.close()
    profile = {k: v for k, v in current.items() if k not in ("api", "pat", "session_token", "token", "user_id")}
    profile.update(api=address, pat=token)
    if certificates:
        profile["root_certificates_path"] = str(Path(certificates).resolve())
    elif certificates == "":
        profile.pop("root_certificates_path", None)
    config.setdefault("profiles", {})[name] = profile
    write_config(path, config)
    hint = "" if name == DEFAULT_PROFILE else f" --profile {name}"
    emit(
        args.json,
        {"profile": name, "api": address, "user_id": info.id, "config": str(path)},
        f"profile {name!r} is ready: {info.id} on {address}. Test it with `pellucid whoami{hint}`",
    )
    return OK


def cmd_auth_list(args: argparse.Namespace) -> int:
    config = read_config(config_path())
    chosen = os.environ.get(ENV_PROFILE) or config.get("current_profile") or DEFAULT_PROFILE
    rows = [
        {
            "profile": name,
            "api": profile.get("api", ""),
            "token": bool(profile.get("pat") or profile.get("session_token") or profile.get("token")),
            "current": name == chosen,
        }
        for name, profile in (config.get("profiles") or {}).items()
    ]
    text = "\n".join(
        f"{'*' if r['current'] else ' '} {r['profile']}\t{r['api'] or '-'}\t{'token' if r['token'] else 'no token'}"
        for r in rows
    )
    emit(args.json, rows, text or f"no profiles in {config_path()}: add one with `pellucid auth`")
    return OK


def cmd_auth_remove(args: argparse.Namespace) -> int:
    path = config_path()
    config = read_config(path)
    profiles = config.get("profiles") or {}
    if args.name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        print(f"pellucid: profile {args.name!r} is not in {path} (profiles there: {known})", file=sys.stderr)
        return NOT_FOUND
    del profiles[args.name]
    if config.get("current_profile") == args.name:
        del config["current_profile"]
    write_config(path, config)
    emit(args.json, {"removed": args.name}, f"removed profile {args.name!r}")
    return OK


def add_commands(commands: Any) -> None:
    auth = commands.add_parser(
        "auth",
        help="store an API address and token as a profile (checked against the server first)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    auth.add_argument("--ca-cert", default=None, metavar="FILE", help="a CA certificate for a TLS server")
    client_options(auth)
    auth.set_defaults(run=cmd_auth)
    actions = auth.add_subparsers(dest="auth_command", required=False)
    listing = actions.add_parser("list", help="the profiles (* marks the one commands use)")
    client_options(listing)
    listing.set_defaults(run=cmd_auth_list)
    remove = actions.add_parser("remove", help="delete a profile")
    remove.add_argument("name")
    client_options(remove)
    remove.set_defaults(run=cmd_auth_remove)
