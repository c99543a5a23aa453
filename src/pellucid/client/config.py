"""Where to connect and with which credentials.

Each setting is resolved on its own, first match wins: the explicit argument, then the
environment (PELLUCID_API, PELLUCID_PAT, PELLUCID_SESSION_TOKEN, PELLUCID_USER_ID,
PELLUCID_ROOT_CERTIFICATES_PATH, PELLUCID_CLIENT_CERT, PELLUCID_CLIENT_KEY), then the
profile in the config file, then the embedded `local` target (whose credentials the
local server writes to its data dir).

A config file that holds a token must be private (mode 0600), as ssh requires of its keys:
one that group or others can read is refused.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pellucid.errors import MissingCredentials, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_API = "PELLUCID_API"
ENV_PAT = "PELLUCID_PAT"
ENV_SESSION_TOKEN = "PELLUCID_SESSION_TOKEN"
ENV_USER_ID = "PELLUCID_USER_ID"
ENV_ROOT_CERTIFICATES = "PELLUCID_ROOT_CERTIFICATES_PATH"
ENV_CLIENT_CERT = "PELLUCID_CLIENT_CERT"
ENV_CLIENT_KEY = "PELLUCID_CLIENT_KEY"
ENV_PROFILE = "PELLUCID_PROFILE"
ENV_CONFIG = "PELLUCID_CONFIG"
ENV_HOME = "PELLUCID_HOME"
DEFAULT_TARGET = "local"
TARGET_FORMS = (
    "local, local:///path/to/data-dir, grpc://host:port, grpcs://host:port or https://host[:port] "
    "(several replicas: grpc://host1:port1,host2:port2)"
)


@dataclass(frozen=True)
class Target:
    """A parsed target URI: `scheme` is local, grpc or grpcs; `location` a data dir, a host:port,
    or several host:port joined by commas (replicas the client spreads its calls over)."""

    scheme: str
    location: str

    @property
    def is_local(self) -> bool:
        return self.scheme == "local"

    @property
    def addresses(self) -> tuple[str, ...]:
        """Each host:port of a remote target, in the order given."""
        return () if self.is_local else tuple(self.location.split(","))

    def __str__(self) -> str:
        return f"local://{self.location}" if self.is_local else f"{self.scheme}://{self.location}"


def default_home() -> Path:
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".pellucid").expanduser()


def parse_target(url: str) -> Target:
    """Parse a base URL in any of the documented forms."""
    url = url.strip().rstrip("/")
    if url in ("local", "local:", "local://"):
        return Target("local", str(default_home().resolve()))
    if url.startswith("local://"):
        path = url[len("local://") :]
        if not path.startswith("/"):
            raise UserError(f"base_url {url!r}: a local target names an absolute path, e.g. local:///home/me/.pellucid")
        return Target("local", str(Path(path).resolve()))
    for prefix, scheme, default_port in (  # noqa: B007 - both are used after the break
        ("grpc://", "grpc", None),
        ("grpcs://", "grpcs", 443),
        ("https://", "grpcs", 443),
        ("http://", "grpc", None),
    ):
        if url.startswith(prefix):
            hostport = url[len(prefix) :]
            break
    else:
        scheme, default_port, hostport = "grpc", None, url
    addresses = [_host_port(part.strip(), default_port, url) for part in hostport.split(",")]
    if len(set(addresses)) != len(addresses):
        raise UserError(f"base_url {url!r} names an address twice")
    return Target(scheme, ",".join(addresses))


def _host_port(hostport: str, default_port: int | None, url: str) -> str:
    """`host:port` (an IPv6 address in brackets, `[::1]:50051`), the port defaulted where the scheme
    has one; the host lower-cased (names are case-insensitive, so `A:1,a:1` is one address twice)."""
    if "/" in hostport:  # another scheme, or a path after the address
        raise UserError(f"base_url {url!r} is not a pellucid target: use {TARGET_FORMS}")
    if hostport.startswith("["):  # [IPv6] or [IPv6]:port
        end = hostport.find("]")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise UserError(f"base_url {url!r}: write an IPv6 address in brackets, e.g. grpc://[::1]:50051")
        port = rest[1:]
    elif hostport.count(":") > 1:
        raise UserError(f"base_url {url!r}: write an IPv6 address in brackets, e.g. grpc://[::1]:50051")
    else:
        host, _, port = hostport.partition(":")
    if not port and default_port:
        port = str(default_port)
    if not host or host == "[]" or not port.isdigit():
        raise UserError(f"base_url {url!r} is not a pellucid target: use {TARGET_FORMS}")
    if not 0 < int(port) < 65536:
        raise UserError(f"base_url {url!r}: port {port} is out of range (1-65535)")
    return f"{host.lower()}:{int(port)}"


def config_path() -> Path:
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "pellucid" / "config.toml"


def load_profile(name: str | None = None) -> dict[str, Any]:
    """The named profile (else PELLUCID_PROFILE, else the file's current_profile, else "default")."""
    path = config_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if name:
            raise UserError(f"profile {name!r} asked for, but there is no config file at {path}") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read the pellucid config file {path}: {exc}") from None
    profiles = data.get("profiles", {})
    _refuse_readable_secrets(path, profiles)
    chosen = name or os.environ.get(ENV_PROFILE) or data.get("current_profile") or "default"
    if chosen not in profiles:
        if name or os.environ.get(ENV_PROFILE):
            known = ", ".join(sorted(profiles)) or "none"
            raise UserError(f"profile {chosen!r} is not in {path} (profiles there: {known})")
        return {}
    return dict(profiles[chosen])


SECRET_KEYS = ("pat", "session_token", "token")


def _refuse_readable_secrets(path: Path, profiles: dict[str, Any]) -> None:
    """Refuse a config file holding a token that group or others can read, as ssh refuses such keys."""
    if not isinstance(profiles, dict) or not any(
        isinstance(p, dict) and any(p.get(k) for k in SECRET_KEYS) for p in profiles.values()
    ):
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UserError(
            f"{path} holds a token and other users may read or change it (mode {mode:04o}): run `chmod 600 {path}`, "
            "and revoke the token if someone else may have read it"
        )


@dataclass(frozen=True)
class ClientSettings:
    target: Target
    pat: str = ""
    token: str = ""
    user_id: str = ""
    root_certificates_path: str | None = None
    # mutual TLS: a PEM certificate for this client and its private key
    client_cert_path: str | None = None
    client_key_path: str | None = None

    @property
    def secret(self) -> str:
        return self.pat or self.token


def resolve_settings(
    base_url: str = "",
    pat: str = "",
    token: str = "",
    user_id: str = "",
    root_certificates_path: str | None = None,
    profile: str | None = None,
    *,
    client_cert_path: str | None = None,
    client_key_path: str | None = None,
) -> ClientSettings:
    """Resolve every setting; raises UserError listing the remedies when no credential is found."""
    env = os.environ
    prof = load_profile(profile)
    base = base_url or env.get(ENV_API) or prof.get("api", "") or DEFAULT_TARGET
    target = parse_target(base)
    pat = clean_token(pat or env.get(ENV_PAT, "") or prof.get("pat", ""), "the PAT")
    token = clean_token(
        token or env.get(ENV_SESSION_TOKEN, "") or prof.get("session_token", "") or prof.get("token", ""),
        "the session token",
    )
    user_id = user_id or env.get(ENV_USER_ID, "") or prof.get("user_id", "")
    certs = root_certificates_path or env.get(ENV_ROOT_CERTIFICATES) or prof.get("root_certificates_path") or None
    if certs and not Path(certs).is_file():
        raise UserError(f"root_certificates_path {certs!r} is not a file")
    client_cert = client_cert_path or env.get(ENV_CLIENT_CERT) or prof.get("client_cert") or None
    client_key = client_key_path or env.get(ENV_CLIENT_KEY) or prof.get("client_key") or None
    if bool(client_cert) != bool(client_key):
        raise UserError(
            f"a client certificate needs its private key and the other way round: set both "
            f"{ENV_CLIENT_CERT} and {ENV_CLIENT_KEY} (or client_cert and client_key in the profile)"
        )
    for name, value in (("client certificate", client_cert), ("client key", client_key)):
        if value and not Path(value).is_file():
            raise UserError(f"{name} {value!r} is not a file")
    if not (pat or token) and not target.is_local:
        raise missing_credentials(str(target))
    return ClientSettings(
        target=target,
        pat=pat,
        token=token,
        user_id=user_id,
        root_certificates_path=certs,
        client_cert_path=client_cert,
        client_key_path=client_key,
    )


def clean_token(value: str, name: str) -> str:
    """Strip the whitespace a token read from a file or pasted picks up; refuse what no token holds.

    A token is printable ASCII without spaces; anything else would fail every call with an
    obscure "Invalid metadata" from gRPC, so say here exactly what is wrong (never the token).
    """
    if not isinstance(value, str):
        raise UserError(f"{name} must be a string, not {type(value).__name__}")
    value = value.strip()
    for position, char in enumerate(value, start=1):
        if not "!" <= char <= "~":
            what = (
                "a space"
                if char == " "
                else "a tab"
                if char == "\t"
                else "a line break"
                if char in "\r\n"
                else f"the control character {char!r}"
                if not char.isprintable() or ord(char) < 128
                else f"the non-ASCII character {char!r}"
            )
            raise UserError(
                f"{name} has {what} at character {position} of {len(value)}: a pellucid token is printable ASCII "
                "without spaces; copy it again, whole (only surrounding whitespace is stripped)"
            )
    return value


def missing_credentials(target: str) -> UserError:
    return MissingCredentials(
        f"no credentials for {target}. Supply a personal access token in one of these ways:\n"
        "  - pass pat='...' (or token='...' for a session token) to the constructor;\n"
        f"  - set {ENV_PAT} (or {ENV_SESSION_TOKEN}) in the environment;\n"
        f'  - add pat = "..." to a profile in {config_path()} (select it with {ENV_PROFILE});\n'
        "  - or use the embedded target `local`, whose server writes the first user's PAT to\n"
        f"    credentials.json in its data dir ({ENV_HOME}, default ~/.pellucid).\n"
        "An admin creates PATs with `pellucid users create USER_ID`."
    )
