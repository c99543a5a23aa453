"""`pellucid server` settings: flags, PELLUCID_SERVER_* variables and a TOML file, from one table.

Precedence flag > environment > file > default; a bad value or unknown key is one line naming the
key and its source, and exit code 2 before anything is created."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pellucid.cli import build_parser, main
from pellucid.server.settings import (
    SETTINGS,
    ServerSettings,
    SettingsError,
    resolve,
    server_settings,
)


def resolved(argv: list[str], environ: dict[str, str]) -> ServerSettings:
    values = resolve(vars(build_parser().parse_args(["server", *argv])), environ)
    return server_settings(values, lambda: Path("/default/home"))


def test_every_server_setting_has_a_row_in_the_table() -> None:
    """A new ServerSettings field without a row would be unreachable from the CLI, files and variables."""
    assert {f.name for f in dataclasses.fields(ServerSettings)} == {s.field for s in SETTINGS if s.field}


def test_each_row_parses_its_fields_type() -> None:
    from pellucid.server.settings import Kind

    kinds = {"str": Kind.TEXT, "int": Kind.INTEGER, "float": Kind.NUMBER, "bool": Kind.BOOLEAN}
    kinds |= {"Path": Kind.PATH, "Path | None": Kind.PATH, "int | None": Kind.INTEGER}
    types = {f.name: f.type for f in dataclasses.fields(ServerSettings)}
    assert {s.key: s.kind for s in SETTINGS if s.field} == {
        s.key: kinds[str(types[s.field])] for s in SETTINGS if s.field
    }


def test_defaults_are_the_embedded_layout_on_the_fixed_port() -> None:
    settings = resolved([], {})
    assert settings == ServerSettings(data_dir=Path("/default/home"), port=7317)
    assert settings.http_port is None  # no HTTP unless asked for


def test_the_http_port_is_off_unless_given_and_zero_lets_the_os_pick() -> None:
    assert resolved(["--http-port", "8080"], {}).http_port == 8080
    assert resolved([], {"PELLUCID_SERVER_HTTP_PORT": "0"}).http_port == 0
    assert resolved(["--max-http-body-bytes", "1024"], {}).max_http_body_bytes == 1024


def test_the_training_time_limit_and_the_algorithm_call_retention_are_settings() -> None:
    defaults = resolved([], {})
    assert defaults.training_max_seconds == 3600.0 and defaults.algorithm_call_retention_seconds == 30 * 24 * 3600.0
    assert resolved(["--training-max-seconds", "0"], {}).training_max_seconds == 0.0  # no limit
    given = {
        "PELLUCID_SERVER_TRAINING_MAX_SECONDS": "7200",
        "PELLUCID_SERVER_ALGORITHM_CALL_RETENTION_SECONDS": "86400",
    }
    from_env = resolved([], given)
    assert from_env.training_max_seconds == 7200.0 and from_env.algorithm_call_retention_seconds == 86400.0
    with pytest.raises(SettingsError, match="at least 60"):
        resolved([], {"PELLUCID_SERVER_ALGORITHM_CALL_RETENTION_SECONDS": "1"})


def test_each_source_sets_every_kind_of_value(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "server.toml"
    config.parent.mkdir()
    config.write_text(
        'metadata = "postgresql://db.internal/pellucid"\n'
        "max_workers = 64\n"
        "allow_private_urls = true\n"
        'tls_cert = "server.pem"\n'  # relative to the file's directory
        "blob_gc_interval_seconds = 60\n"
    )
    from_file = resolved(["--config", str(config)], {})
    assert from_file.metadata_uri == "postgresql://db.internal/pellucid"
    assert from_file.max_workers == 64 and from_file.allow_private_urls is True
    assert from_file.tls_cert == config.parent.resolve() / "server.pem"
    assert from_file.blob_gc_interval_seconds == 60.0

    from_env = resolved(
        [],
        {
            "PELLUCID_SERVER_BLOBS": "s3://bucket/prefix",
            "PELLUCID_SERVER_QUEUE": "memory:",
            "PELLUCID_SERVER_PORT": "9000",
            "PELLUCID_SERVER_MAX_WORKERS": "32",
            "PELLUCID_SERVER_ALLOW_PRIVATE_URLS": "yes",
            "PELLUCID_SERVER_DATA_DIR": str(tmp_path / "data"),
            "PELLUCID_SERVER_HEALTH_CHECK_SECONDS": "0.5",
        },
    )
    assert (from_env.blob_uri, from_env.queue_uri, from_env.port) == ("s3://bucket/prefix", "memory:", 9000)
    assert from_env.max_workers == 32 and from_env.allow_private_urls is True
    assert from_env.data_dir == tmp_path / "data" and from_env.health_check_seconds == 0.5

    from_flags = resolved(["--port", "0", "--admin-user", "root", "--allow-private-urls"], {})
    assert (from_flags.port, from_flags.admin_user_id, from_flags.allow_private_urls) == (0, "root", True)
    assert from_flags.vectors_uri == ""  # the default: the embedded index in the data dir


def test_vectors_setting_from_flag_environment_and_file(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('vectors = "exact:///srv/vectors"\n')
    assert resolved(["--config", str(config)], {}).vectors_uri == "exact:///srv/vectors"
    from_env = resolved([], {"PELLUCID_SERVER_VECTORS": "postgresql://db/pellucid"})
    assert from_env.vectors_uri == "postgresql://db/pellucid"
    assert resolved(["--vectors", "memory:"], {"PELLUCID_SERVER_VECTORS": "faiss:///v"}).vectors_uri == "memory:"


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("port = 1001\nmax_workers = 11\nmax_streams_per_user = 7\nallow_private_urls = true\n")
    environ = {
        "PELLUCID_SERVER_CONFIG": str(config),
        "PELLUCID_SERVER_PORT": "1002",
        "PELLUCID_SERVER_MAX_WORKERS": "12",
    }
    settings = resolved(["--port", "1003", "--no-allow-private-urls"], environ)
    assert settings.port == 1003  # flag over variable and file
    assert settings.max_workers == 12  # variable over file
    assert settings.max_streams_per_user == 7  # file over default
    assert settings.allow_private_urls is False  # a flag turns a file's true off
    assert settings.max_predicts_per_user == 64  # default
    other = tmp_path / "other.toml"
    other.write_text("max_streams_per_user = 9\n")
    assert resolved(["--config", str(other)], environ).max_streams_per_user == 9  # --config over the variable


@pytest.mark.parametrize(
    ("argv", "environ", "file_text", "message"),
    [
        ([], {"PELLUCID_SERVER_PORT": "seven"}, None, "PELLUCID_SERVER_PORT: 'seven' is not an integer"),
        ([], {"PELLUCID_SERVER_MAX_WORKERS": "3"}, None, "PELLUCID_SERVER_MAX_WORKERS: must be at least 8, got 3"),
        ([], {"PELLUCID_SERVER_METDATA": "x"}, None, "PELLUCID_SERVER_METDATA: unknown setting variable"),
        ([], {"PELLUCID_SERVER_QUEUE": "redis://q"}, None, "PELLUCID_SERVER_QUEUE: unsupported work queue URI"),
        ([], {"PELLUCID_SERVER_VECTORS": "qdrant://v"}, None, "PELLUCID_SERVER_VECTORS: unsupported vector index URI"),
        ([], {}, "vectors = 'hnsw:///x'\n", "server.toml: vectors: unsupported vector index URI"),
        ([], {"PELLUCID_SERVER_ALLOW_PRIVATE_URLS": "maybe"}, None, "is not a boolean"),
        ([], {}, "metdata = 'x'\n", "server.toml: unknown key 'metdata'"),
        ([], {}, 'port = "7317"\n', "server.toml: port: '7317' is not an integer (unquoted)"),
        ([], {}, "health_check_seconds = -1\n", "server.toml: health_check_seconds: must be at least 0"),
        ([], {}, "port = \n", "server.toml: not a valid TOML file"),
    ],
)
def test_a_bad_value_is_one_line_naming_key_and_source_and_exit_code_2_before_anything_is_made(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    environ: dict[str, str],
    file_text: str | None,
    message: str,
) -> None:
    data_dir = tmp_path / "data"
    if file_text is not None:
        (tmp_path / "server.toml").write_text(file_text)
        argv = [*argv, "--config", str(tmp_path / "server.toml")]
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["server", "--data-dir", str(data_dir), "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not data_dir.exists()


def test_a_bad_flag_is_refused_by_the_parser_with_code_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pellucid.cli", "server", "--data-dir", str(tmp_path / "d"), "--max-workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "argument --max-workers: must be at least 8, got 2" in done.stderr
    assert not (tmp_path / "d").exists()


def test_a_missing_settings_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"missing\.toml: cannot read the settings file"):
        resolve({"config": tmp_path / "missing.toml"}, {})


def test_the_readme_settings_file_is_accepted(tmp_path: Path) -> None:
    """The README's example file stays valid as settings change."""
    import re

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = re.search(r"^```toml\n(# /etc/pellucid/server.toml\n.*?)^```", readme, re.S | re.M)
    assert example is not None
    (tmp_path / "server.toml").write_text(example.group(1))
    settings = server_settings(resolve({"config": tmp_path / "server.toml"}, {}), lambda: Path("/unused"))
    assert settings.blob_uri.startswith("s3://") and settings.tls_cert == tmp_path.resolve() / "server.pem"


def test_a_server_started_from_a_file_and_the_environment_alone(tmp_path: Path) -> None:
    """No flag at all: the data dir and first user from the file, the port from a variable."""
    import json
    import os
    import signal

    config = tmp_path / "server.toml"
    config.write_text('data_dir = "data"\nadmin_user = "ops"\nport = 7317\n')
    env = {**os.environ, "PELLUCID_SERVER_CONFIG": str(config), "PELLUCID_SERVER_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pellucid.cli", "server"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        while lines[-1] and not lines[-1].startswith("listening on "):  # log lines go to the same pipe
            lines.append(proc.stdout.readline())
        assert f"data dir {tmp_path / 'data'}\n" in lines, lines
        assert lines[-1].startswith("listening on 127.0.0.1:") and not lines[-1].strip().endswith(":7317"), lines
        assert json.loads((tmp_path / "data" / "credentials.json").read_text())["user_id"] == "ops"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
