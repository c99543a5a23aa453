"""The data dir holds tokens and every tenant's data: only its user may read it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid.client import _embedded
from pellucid.client.user import User
from pellucid.server.datadir import command_line
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests.media_samples import png


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual umask, under which files are created readable by everyone unless made otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    """Every path under root (root itself as "."), with its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def exposed(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """What group or others can use, as {path: mode}."""
    return {path: oct(mode) for path, mode in modes(root).items() if mode & 0o077 and not path.startswith(skip)}


def test_a_new_data_dir_is_private_to_its_user(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    user = User(base_url=f"local://{data_dir}")
    try:
        app = user.create_app("private")
        app.inputs().upload_from_bytes(image_bytes=png("private"), input_id="photo")  # a blob in a pack
        written = modes(data_dir)
        for name in (
            "server.lock",
            "server.json",
            "credentials.json",
            "metadata.sqlite3",
            "metadata.sqlite3-wal",
            "metadata.sqlite3-shm",
        ):
            assert written[name] == 0o600, name
        assert any(path.startswith("blobs/packs/") for path in written)
        assert exposed(data_dir) == {}
    finally:
        _embedded.forget(str(data_dir))
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_an_existing_data_dir_is_tightened_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = PellucidServer(ServerSettings(data_dir=data_dir))
    server.start()
    credentials = server.data_dir.read_credentials()
    assert credentials is not None
    User(base_url=f"grpc://{server.address}", pat=credentials.pat).create_app("kept")
    server.stop(grace=0.5)
    (data_dir / "extra" / "nested").mkdir(parents=True)
    (data_dir / "extra" / "nested" / "notes.txt").write_text("left here by hand")
    os.symlink("/etc/hostname", data_dir / "a-link")  # not followed: /etc stays as it is
    for path in [data_dir, *data_dir.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)  # as a copy made under umask 022 would be
    assert len(exposed(data_dir)) > 5

    server = PellucidServer(ServerSettings(data_dir=data_dir))
    server.start()
    try:
        assert exposed(data_dir, skip=("a-link", "extra")) == {}
        tightened = modes(data_dir)
        assert tightened["."] == tightened["blobs"] == tightened["blobs/packs"] == 0o700
        assert tightened["metadata.sqlite3"] == tightened["credentials.json"] == 0o600
        # what pellucid did not make is left as it was (the data dir itself is 0700 now)
        assert tightened["extra"] == 0o755 and tightened["extra/nested/notes.txt"] == 0o644
        User(base_url=f"grpc://{server.address}", pat=credentials.pat).list_apps()  # still readable by its user
    finally:
        server.stop(grace=0.5)


def test_the_owner_record_hides_tokens_given_on_the_command_line() -> None:
    shown = command_line(
        ["pellucid", "runner", "start", "m.py:M", "--pat", "pel_pat_secret", "--token=sess_secret", "--labels", "a b"]
    )
    assert shown == "pellucid runner start m.py:M --pat '***' '--token=***' --labels 'a b'"
