"""The server's settings, and the one table that reads them from flags, the environment and a TOML file.

Each row of `SETTINGS` names one setting once: its key is the TOML key, the environment
variable `PELLUCID_SERVER_<KEY>` and the flag `--<key-with-dashes>`; its kind parses and
checks a value from any of the three. Precedence: flag > environment > file > default.
Kept free of grpc and the stores so that building the CLI's parser stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "PELLUCID_SERVER_"
ENV_CONFIG = "PELLUCID_SERVER_CONFIG"  # the settings file, when --config is not given
DEFAULT_PORT = 7317


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    # Empty: SQLite in the data dir.
    metadata_uri: str = ""
    # Empty: files (and a SQLite file for small blobs) in the data dir. Or
    # s3://bucket/prefix?endpoint_url=...&region=... (see docs/scale-out.md, "Blobs on S3").
    blob_uri: str = ""
    # Where prediction items wait for runners. Empty or `memory:`: in this process; or
    # postgresql://... shared by replicas (see docs/scale-out.md, "Work queue").
    queue_uri: str = ""
    # The vector index (search embeddings). Empty: in the data dir (faiss ANN when faiss-cpu is
    # installed, else exact); or memory:, exact:///dir, faiss:///dir, postgresql://... (pgvector).
    vectors_uri: str = ""
    admin_user_id: str = "admin"
    # Threads serving calls. Streams, predicts and runner connections hold one for as long as they
    # last: they take at most three quarters, per-user caps below (grpc/limits.py).
    max_workers: int = 256
    # Per user: open UploadBlob/DownloadInputs (and other) streams; predicts waiting for or
    # running on a runner; runner connections (counted apart, so uploads never lock runners out).
    max_streams_per_user: int = 32
    max_predicts_per_user: int = 64
    # PostInputs calls in flight: each holds a thread while the server fetches its URL inputs
    max_input_batches_per_user: int = 32
    # searches in flight: each holds a thread while its query is embedded (or its image URL fetched)
    max_searches_per_user: int = 16
    max_runner_connections_per_user: int = 64
    # Fetch URL inputs from loopback and private networks too. Off for a shared server:
    # callers could make it read what only it can reach (see engine/fetch.py).
    allow_private_urls: bool = False
    # PEM files. With a certificate and key the server speaks TLS only; with a client CA
    # too, it also requires a client certificate that CA signed (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Largest blob a caller may store (UploadBlob, or an input's bytes): 1 GiB.
    max_blob_bytes: int = 1 << 30
    # Largest hosted data (data://) file; 0: no limit but the blob store's free disk space.
    max_data_file_bytes: int = 0
    # Blob garbage collection: how often (seconds; 0 turns it off), and how long an uploaded
    # blob no input uses is kept (it may be waiting for the PostInputs that will use it).
    blob_gc_interval_seconds: float = 3600.0
    blob_gc_grace_seconds: float = 3600.0
    # Replicas sharing a metadata store heartbeat this often; one silent for replica_gone_seconds
    # is gone, and the next replica to start releases its unfinished request claims.
    replica_heartbeat_seconds: float = 5.0
    replica_gone_seconds: float = 30.0
    # How often the stores are probed; while one fails, gRPC health says NOT_SERVING (0: never probe).
    health_check_seconds: float = 5.0
    # Threads embedding stored inputs for their apps' base workflows (engine/indexing.py); 0: none
    # (inputs wait PENDING until a server that runs them, or another replica, embeds them).
    index_workers: int = 1
    # Threads running training jobs (engine/training.py); 0: none (jobs wait QUEUED for a server that runs them)
    training_workers: int = 1
    # The HTTP port (deployments' rows as JSON, server/http): None: no HTTP; 0: a port the OS picks.
    # It listens on `host`, with TLS when the gRPC port has it. Bodies past max_http_body_bytes get 413.
    http_port: int | None = None
    max_http_body_bytes: int = 64 * 1024 * 1024
    # Threads running model evaluations (engine/evaluations.py); 0: none (they wait QUEUED).
    evaluation_workers: int = 1
    # A training job that runs longer than this fails (engine/training.py); 0: no limit.
    training_max_seconds: float = 3600.0
    # Algorithm calls (the rows ReportInsights names) are deleted this long after they were made.
    algorithm_call_retention_seconds: float = 30 * 24 * 3600.0

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class SettingsError(ValueError):
    """A setting that cannot be used: the message names the key and where its value came from."""


class Kind(enum.Enum):
    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    PATH = "path"


_TOML_TYPES: dict[Kind, tuple[tuple[type, ...], str]] = {
    Kind.TEXT: ((str,), "a string"),
    Kind.PATH: ((str,), "a string (a path)"),
    Kind.INTEGER: ((int,), "an integer (unquoted)"),
    Kind.NUMBER: ((int, float), "a number (unquoted)"),
    Kind.BOOLEAN: ((bool,), "true or false (unquoted)"),
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    """One setting: `key` in files, PELLUCID_SERVER_<KEY> and --<key>; `field` of ServerSettings
    ("" for a setting of the command itself)."""

    key: str
    field: str
    kind: Kind
    help: str
    minimum: float | None = None
    default: Any = None  # None: the ServerSettings field's default
    metavar: str | None = None
    check: Callable[[str], object] | None = None  # raises ValueError saying what is accepted

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    def default_value(self) -> Any:
        if self.default is not None or not self.field:
            return self.default
        return _FIELD_DEFAULTS[self.field]

    def parse_text(self, text: str) -> Any:
        """A value from a flag or a variable; ValueError saying what is wrong."""
        if self.kind is Kind.INTEGER:
            try:
                value: Any = int(text.replace("_", ""))
            except ValueError:
                raise ValueError(f"{text!r} is not an integer") from None
        elif self.kind is Kind.NUMBER:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a number") from None
        elif self.kind is Kind.BOOLEAN:
            if text.strip().lower() not in _TRUE + _FALSE:
                raise ValueError(f"{text!r} is not a boolean: use true or false")
            value = text.strip().lower() in _TRUE
        elif self.kind is Kind.PATH:
            value = Path(text).expanduser() if text else None
        else:
            value = text
        return self.checked(value)

    def parse_toml(self, value: object, base: Path) -> Any:
        """A value from a TOML file (relative paths are relative to the file's directory)."""
        expected, described = _TOML_TYPES[self.kind]
        if not isinstance(value, expected) or (self.kind is not Kind.BOOLEAN and isinstance(value, bool)):
            raise ValueError(f"{value!r} is not {described}")
        if self.kind is Kind.PATH:
            assert isinstance(value, str)
            return self.checked(base / Path(value).expanduser() if value else None)
        if self.kind is Kind.NUMBER:
            assert isinstance(value, (int, float))
            return self.checked(float(value))
        return self.checked(value)

    def checked(self, value: Any) -> Any:
        if self.kind is Kind.NUMBER and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}, got {value}")
        if self.check is not None:
            self.check(value)
        return value


def _check_queue_uri(uri: str) -> None:
    from pellucid.server.storage.registry import check_work_queue_uri

    check_work_queue_uri(uri)


def _check_vectors_uri(uri: str) -> None:
    from pellucid.server.storage.registry import check_vector_index_uri

    check_vector_index_uri(uri)


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ServerSettings)}
_FIELD_DEFAULTS["data_dir"] = None  # the client config's home: PELLUCID_HOME or ~/.pellucid

SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "data_dir", Kind.PATH, "where state lives (default: PELLUCID_HOME or ~/.pellucid)"),
    Setting(
        "metadata",
        "metadata_uri",
        Kind.TEXT,
        "metadata store: sqlite:///path/file.sqlite3 or postgresql://user@host:5432/db (default: SQLite in the data dir)",
        metavar="URI",
    ),
    Setting(
        "blobs",
        "blob_uri",
        Kind.TEXT,
        "where blobs live: file:///path (default: the data dir) or "
        "s3://bucket/prefix?endpoint_url=...&region=... (credentials from the AWS_* variables)",
        metavar="URI",
    ),
    Setting(
        "queue",
        "queue_uri",
        Kind.TEXT,
        "where prediction items wait for runners: memory: (in this process, the default) or "
        "postgresql://user:password@host:port/database (one queue shared by replicas)",
        metavar="URI",
        check=_check_queue_uri,
    ),
    Setting(
        "vectors",
        "vectors_uri",
        Kind.TEXT,
        "the vector index of search: faiss:///path or exact:///path (default: in the data dir, faiss if "
        "installed, else exact), postgresql://user@host:5432/db (pgvector) or memory: (lost on stop)",
        metavar="URI",
        check=_check_vectors_uri,
    ),
    Setting(
        "host", "host", Kind.TEXT, "address to listen on; beyond loopback, use TLS (a warning is logged without it)"
    ),
    Setting(
        "port",
        "port",
        Kind.INTEGER,
        f"default {DEFAULT_PORT}; 0 lets the OS pick a free port. "
        "If it is in use, the server exits with code 6 before touching the data dir",
        minimum=0,
        default=DEFAULT_PORT,
    ),
    Setting("tls_cert", "tls_cert", Kind.PATH, "PEM certificate (chain): serve TLS only"),
    Setting("tls_key", "tls_key", Kind.PATH, "PEM private key of --tls-cert"),
    Setting("tls_client_ca", "tls_client_ca", Kind.PATH, "PEM CA: require client certificates it signed (mutual TLS)"),
    Setting("admin_user", "admin_user_id", Kind.TEXT, "id of the first user, created on first start"),
    Setting(
        "max_workers",
        "max_workers",
        Kind.INTEGER,
        "threads serving calls: each stream, runner connection and waiting predict holds one; "
        "together they may take three quarters",
        minimum=8,
    ),
    Setting(
        "max_streams_per_user",
        "max_streams_per_user",
        Kind.INTEGER,
        "open upload/download streams per user; past it: RESOURCE_EXHAUSTED",
        minimum=1,
    ),
    Setting(
        "max_predicts_per_user",
        "max_predicts_per_user",
        Kind.INTEGER,
        "predicts per user waiting for or running on a runner; past it: RESOURCE_EXHAUSTED",
        minimum=1,
    ),
    Setting(
        "max_input_batches_per_user",
        "max_input_batches_per_user",
        Kind.INTEGER,
        "PostInputs calls per user in flight (the server fetches their URLs); past it: RESOURCE_EXHAUSTED",
        minimum=1,
    ),
    Setting(
        "max_searches_per_user",
        "max_searches_per_user",
        Kind.INTEGER,
        "searches per user in flight (the server embeds their queries); past it: RESOURCE_EXHAUSTED",
        minimum=1,
    ),
    Setting(
        "max_runner_connections_per_user",
        "max_runner_connections_per_user",
        Kind.INTEGER,
        "runner processes (Connect streams) per user; past it: RESOURCE_EXHAUSTED",
        minimum=1,
    ),
    Setting(
        "allow_private_urls",
        "allow_private_urls",
        Kind.BOOLEAN,
        "fetch URL inputs from this machine and private networks too (off: callers could read them)",
    ),
    Setting(
        "max_blob_bytes",
        "max_blob_bytes",
        Kind.INTEGER,
        "largest blob a caller may upload, in bytes (default 1 GiB)",
        minimum=1,
    ),
    Setting(
        "max_data_file_bytes",
        "max_data_file_bytes",
        Kind.INTEGER,
        "largest data:// file, in bytes (default 0: no limit but the server's free disk space)",
        minimum=0,
    ),
    Setting(
        "blob_gc_interval_seconds",
        "blob_gc_interval_seconds",
        Kind.NUMBER,
        "seconds between blob garbage collections (0: none)",
        minimum=0,
    ),
    Setting(
        "blob_gc_grace_seconds",
        "blob_gc_grace_seconds",
        Kind.NUMBER,
        "seconds an uploaded blob no input uses is kept",
        minimum=0,
    ),
    Setting(
        "replica_heartbeat_seconds",
        "replica_heartbeat_seconds",
        Kind.NUMBER,
        "seconds between heartbeats of this replica in the metadata store",
        minimum=0.01,
    ),
    Setting(
        "replica_gone_seconds",
        "replica_gone_seconds",
        Kind.NUMBER,
        "seconds of silence after which another replica counts as gone (its claims are released)",
        minimum=0.01,
    ),
    Setting(
        "health_check_seconds",
        "health_check_seconds",
        Kind.NUMBER,
        "seconds between probes of the stores; while one fails, gRPC health says NOT_SERVING (0: no probes)",
        minimum=0,
    ),
    Setting(
        "index_workers",
        "index_workers",
        Kind.INTEGER,
        "threads embedding stored inputs for their apps' base workflows (0: none, inputs wait)",
        minimum=0,
    ),
    Setting(
        "training_workers",
        "training_workers",
        Kind.INTEGER,
        "threads running model training jobs (0: none, jobs wait queued)",
        minimum=0,
    ),
    Setting(
        "training_max_seconds",
        "training_max_seconds",
        Kind.NUMBER,
        "seconds one training job may run before it fails (default 3600; 0: no limit): a worker serves every user",
        minimum=0,
    ),
    Setting(
        "algorithm_call_retention_seconds",
        "algorithm_call_retention_seconds",
        Kind.NUMBER,
        "seconds an algorithm call is kept, for insights to be reported on it (default 30 days; at least a day, as a call may run that long)",
        minimum=60,
    ),
    Setting(
        "evaluation_workers",
        "evaluation_workers",
        Kind.INTEGER,
        "threads running model evaluations (0: none, evaluations wait queued)",
        minimum=0,
    ),
    Setting(
        "http_port",
        "http_port",
        Kind.INTEGER,
        "also serve HTTP on this port (deployments: POST /v1/deployments/<id>/forward); 0 lets the OS pick; "
        "not set: no HTTP",
        minimum=0,
    ),
    Setting(
        "max_http_body_bytes",
        "max_http_body_bytes",
        Kind.INTEGER,
        "largest HTTP request body, in bytes (default 64 MiB); past it: 413",
        minimum=1,
    ),
    Setting("grace", "", Kind.NUMBER, "seconds in-flight calls get on shutdown", minimum=0, default=5.0),
    Setting("log_level", "", Kind.TEXT, "debug, info, warning or error", default="info", check=lambda v: _log_level(v)),
)
BY_KEY = {s.key: s for s in SETTINGS}


def _log_level(text: str) -> str:
    if text.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"{text!r} is not a log level: use debug, info, warning or error")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag per setting. Defaults are left out (SUPPRESS): only flags given reach `resolve`."""
    parser.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"TOML settings file (or {ENV_CONFIG}): keys as the flags, with underscores; "
        f"{ENV_PREFIX}<KEY> variables override it, flags override both",
    )
    for setting in SETTINGS:
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": setting.key, "help": setting.help}
        if setting.kind is Kind.BOOLEAN:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _argparse_type(setting)
            kwargs["metavar"] = setting.metavar
        parser.add_argument(setting.flag, **kwargs)


def _argparse_type(setting: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return setting.parse_text(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.kind.value  # argparse names it in "invalid <name> value"
    return parse


def read_file(path: Path) -> dict[str, Any]:
    """The settings a TOML file gives, parsed and checked; SettingsError names the file and key."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the settings file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not a valid TOML file: {exc}") from None
    values = {}
    base = path.resolve().parent
    for key, raw in document.items():
        setting = BY_KEY.get(key)
        if setting is None:
            raise SettingsError(f"{path}: unknown key {key!r} (known keys: {', '.join(BY_KEY)})")
        try:
            values[key] = setting.parse_toml(raw, base)
        except ValueError as exc:
            raise SettingsError(f"{path}: {key}: {exc}") from None
    return values


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings PELLUCID_SERVER_* variables give; an unknown one is refused (it is likely a typo)."""
    values = {}
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        setting = BY_KEY.get(key)
        if setting is None:
            known = ", ".join(s.env for s in SETTINGS)
            raise SettingsError(f"{name}: unknown setting variable (known: {ENV_CONFIG}, {known})")
        try:
            values[key] = setting.parse_text(text)
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None
    return values


def resolve(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting's value by key: flag > environment > file > default.

    `flags` holds only the flags given (the parser's defaults are suppressed), plus `config`
    if --config was. SettingsError names the key and the source of a bad value."""
    environ = os.environ if environ is None else environ
    config = flags.get("config") or (Path(environ[ENV_CONFIG]) if environ.get(ENV_CONFIG) else None)
    values = {s.key: s.default_value() for s in SETTINGS}
    if config is not None:
        values.update(read_file(Path(config)))
    values.update(read_environment(environ))
    values.update({k: v for k, v in flags.items() if k in BY_KEY})
    return values


def server_settings(values: Mapping[str, Any], default_data_dir: Callable[[], Path]) -> ServerSettings:
    """ServerSettings from `resolve`'s values (a data dir not set: `default_data_dir()`)."""
    fields = {s.field: values[s.key] for s in SETTINGS if s.field}
    if fields["data_dir"] is None:
        fields["data_dir"] = default_data_dir()
    return ServerSettings(**fields)
