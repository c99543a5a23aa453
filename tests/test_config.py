"""Credential and target resolution: argument, then environment, then profile, then local."""

import os
from pathlib import Path

import pytest

from pellucid.client.config import parse_target, resolve_settings
from pellucid.client.urls import split_url
from pellucid.errors import UserError


def write_config(text: str) -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "pellucid" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("url", "scheme", "location"),
    [
        ("grpc://127.0.0.1:5000", "grpc", "127.0.0.1:5000"),
        ("grpcs://api.example.com:443", "grpcs", "api.example.com:443"),
        ("https://api.example.com", "grpcs", "api.example.com:443"),
        ("https://api.example.com:8443/", "grpcs", "api.example.com:8443"),
        ("localhost:7000", "grpc", "localhost:7000"),
        ("local:///srv/pellucid", "local", "/srv/pellucid"),
        ("grpc://10.0.0.1:7317, 10.0.0.2:7317", "grpc", "10.0.0.1:7317,10.0.0.2:7317"),
        ("https://a.example.com,b.example.com:8443", "grpcs", "a.example.com:443,b.example.com:8443"),
        ("grpc://[::1]:50051", "grpc", "[::1]:50051"),
        ("grpcs://[::1]", "grpcs", "[::1]:443"),
        ("https://API.Example.com:0443", "grpcs", "api.example.com:443"),
    ],
)
def test_target_forms(url: str, scheme: str, location: str) -> None:
    target = parse_target(url)
    assert (target.scheme, target.location) == (scheme, location)


@pytest.mark.parametrize("url", ["grpc://h:1,h:1", "grpc://a:1,A:1", "grpc://h:1,h:01"])
def test_a_replica_named_twice_is_refused(url: str) -> None:
    with pytest.raises(UserError, match="twice"):
        parse_target(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("grpc://h:0", "out of range"),
        ("grpc://h:65536", "out of range"),
        ("grpc://::1:50051", "IPv6 address in brackets"),
        ("grpc://[::1", "IPv6 address in brackets"),
        ("grpc://[::1]x", "IPv6 address in brackets"),
        ("grpc://[]:1", "grpc://host:port"),
    ],
)
def test_bad_addresses_say_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(UserError, match=says):
        parse_target(url)


def test_local_uses_pellucid_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PELLUCID_HOME", str(tmp_path))
    assert parse_target("local") == parse_target(f"local://{tmp_path}")


@pytest.mark.parametrize(
    "url", ["grpc://nohost", "ftp://x:1", "local://relative/path", "grpc://h:p", "grpc://h:1,", "grpc://h:1,nohost"]
)
def test_bad_targets_say_which_forms_work(url: str) -> None:
    with pytest.raises(UserError, match=r"grpc://host:port|absolute path"):
        parse_target(url)


def test_nothing_configured_means_local() -> None:
    settings = resolve_settings()
    assert settings.target.is_local and settings.secret == ""


def test_argument_beats_environment_beats_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('[profiles.default]\napi = "grpc://profile:1"\npat = "from-profile"\nuser_id = "p"\n')
    settings = resolve_settings()
    assert (str(settings.target), settings.pat, settings.user_id) == ("grpc://profile:1", "from-profile", "p")
    monkeypatch.setenv("PELLUCID_PAT", "from-env")
    monkeypatch.setenv("PELLUCID_API", "grpc://env:2")
    settings = resolve_settings()
    assert (str(settings.target), settings.pat, settings.user_id) == ("grpc://env:2", "from-env", "p")
    settings = resolve_settings(base_url="grpc://arg:3", pat="from-arg", user_id="a")
    assert (str(settings.target), settings.pat, settings.user_id) == ("grpc://arg:3", "from-arg", "a")


def test_named_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(
        'current_profile = "work"\n[profiles.work]\napi = "grpc://work:1"\npat = "w"\n'
        '[profiles.home]\napi = "grpc://home:1"\npat = "h"\n'
    )
    assert resolve_settings().pat == "w"
    monkeypatch.setenv("PELLUCID_PROFILE", "home")
    assert resolve_settings().pat == "h"
    assert resolve_settings(profile="work").pat == "w"
    with pytest.raises(UserError, match="profiles there: home, work"):
        resolve_settings(profile="nope")


def test_session_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PELLUCID_SESSION_TOKEN", "sess")
    settings = resolve_settings(base_url="grpc://h:1")
    assert settings.token == "sess" and settings.secret == "sess"


def test_missing_credentials_lists_every_remedy() -> None:
    with pytest.raises(UserError) as info:
        resolve_settings(base_url="grpc://h:1")
    text = str(info.value)
    for remedy in (
        "pat=",
        "PELLUCID_PAT",
        "PELLUCID_SESSION_TOKEN",
        "config.toml",
        "PELLUCID_PROFILE",
        "local",
        "pellucid users create",
    ):
        assert remedy in text


def test_unreadable_config_is_reported() -> None:
    path = write_config("this is = = not toml")
    with pytest.raises(UserError, match=str(path)):
        resolve_settings()


def test_missing_root_certificates_file() -> None:
    with pytest.raises(UserError, match="root_certificates_path"):
        resolve_settings(base_url="grpcs://h:1", pat="x", root_certificates_path="/no/such/file.pem")


@pytest.mark.parametrize(
    ("url", "base", "user", "app"),
    [
        ("grpc://127.0.0.1:5000/alice/photos", "grpc://127.0.0.1:5000", "alice", "photos"),
        ("grpc://127.0.0.1:5000/alice/photos/", "grpc://127.0.0.1:5000", "alice", "photos"),
        ("https://api.example.com/alice/photos", "https://api.example.com", "alice", "photos"),
        ("local:///tmp/data/alice/photos", "local:///tmp/data", "alice", "photos"),
        ("alice/photos", "", "alice", "photos"),
    ],
)
def test_app_urls(url: str, base: str, user: str, app: str) -> None:
    parsed = split_url(url)
    assert (parsed.base, parsed.user_id, parsed.app_id) == (base, user, app)


def test_model_urls_with_versions() -> None:
    parsed = split_url("grpc://h:1/alice/photos/models/cls/versions/v2", "models")
    assert (parsed.user_id, parsed.app_id, parsed.resource_id, parsed.version_id) == ("alice", "photos", "cls", "v2")
    assert split_url("grpc://h:1/alice/photos/models/cls/", "models").version_id == ""


@pytest.mark.parametrize("url", ["photos", "grpc://h:1/alice", "grpc://h:1/al ice/photos", "ftp:/x/alice/photos"])
def test_bad_app_urls(url: str) -> None:
    with pytest.raises(UserError, match="url"):
        split_url(url)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_config_file_holding_a_token_others_can_read_is_refused(mode: int) -> None:
    path = write_config('[profiles.default]\napi = "grpc://profile:1"\npat = "pel_pat_secret"\n')
    path.chmod(mode)
    with pytest.raises(
        UserError, match=f"other users may read or change it \\(mode {mode:04o}\\): run `chmod 600 {path}`"
    ):
        resolve_settings()
    path.chmod(0o600)
    assert resolve_settings().pat == "pel_pat_secret"


def test_a_config_file_without_tokens_may_be_readable() -> None:
    path = write_config('[profiles.default]\napi = "grpc://profile:1"\n')
    path.chmod(0o644)
    assert str(resolve_settings(pat="from-argument").target) == "grpc://profile:1"
