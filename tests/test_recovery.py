"""Uploads cut short by a crash (of the server or of the client) finish when re-run:
no item is missing and none is stored twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from pellucid.client._transport import RetryPolicy
from pellucid.client.user import User
from pellucid.datasets import DataLoader, VisualClassificationFeatures
from tests.media_samples import png
from tests.test_server_process import ServerProcess, admin_pat

N = 1500


class Images(DataLoader):
    task = "visual_classification"

    def __len__(self) -> int:
        return N

    def __getitem__(self, index: int) -> VisualClassificationFeatures:
        return VisualClassificationFeatures(
            image_bytes=png(f"recovery-{index}", side=16), labels=["cat"], metadata={"index": index}
        )


def client(address: str, data_dir: Path, **kwargs: object) -> User:
    return User(base_url=f"grpc://{address}", pat=admin_pat(data_dir), **kwargs)


def assert_complete(user: User) -> None:
    dataset = user.app("recovery").dataset("images")
    indices = sorted(int(i.data.metadata["index"]) for i in dataset.list_inputs())
    assert indices == list(range(N))  # every item once: none missing, none twice
    assert dataset.get_stats().annotations == N


def test_server_killed_mid_upload(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir)
    user = client(server.address, data_dir, retry=RetryPolicy(max_attempts=2))
    user.create_app("recovery").create_dataset("images")

    def kill_when_a_third_is_in() -> None:
        watcher = client(server.address, data_dir)
        dataset = watcher.app("recovery").dataset("images")
        while dataset.get_stats().inputs < N // 3:
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_when_a_third_is_in)
    killer.start()
    first = user.app("recovery").dataset("images").upload_dataset(Images(), batch_size=32, progress=False)
    killer.join()
    server.proc.wait()
    assert first.failed and {f.code for f in first.failed} <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}

    restarted = ServerProcess(data_dir)
    try:
        user = client(restarted.address, data_dir)
        second = user.app("recovery").dataset("images").upload_dataset(Images(), batch_size=32, progress=False)
        assert second.ok
        assert len(second.stored_ids) + len(second.duplicate_ids) == N
        assert len(first.stored_ids) <= len(second.duplicate_ids)
        assert_complete(user)
    finally:
        restarted.stop()


UPLOADER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from tests.test_recovery import Images
    from pellucid.client.user import User
    user = User(base_url=sys.argv[1], pat=sys.argv[2])
    user.app("recovery").dataset("images").upload_dataset(Images(), batch_size=32, progress=False)
    """
)


def test_client_killed_mid_upload(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir)
    try:
        user = client(server.address, data_dir)
        dataset = user.create_app("recovery").create_dataset("images")
        root = str(Path(__file__).resolve().parent.parent)
        proc = subprocess.Popen(
            [sys.executable, "-c", UPLOADER, f"grpc://{server.address}", admin_pat(data_dir), root],
            env={**os.environ, "PYTHONPATH": root},
        )
        while dataset.get_stats().inputs < N // 3:
            assert proc.poll() is None, "the uploader ended before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = dataset.get_stats().inputs
        assert N // 3 <= partial < N
        result = dataset.upload_dataset(Images(), batch_size=32, progress=False)
        assert result.ok and len(result.duplicate_ids) >= partial
        assert_complete(user)
    finally:
        server.stop()


def test_failures_file_is_json_lines(tmp_path: Path) -> None:
    from pellucid.client.uploads import FailedItem, UploadResult, read_failures

    result = UploadResult(
        failed=[
            FailedItem(3, "a", "x.png", "INVALID_ARGUMENT", "bad"),
            FailedItem(9, "", "y.png", "UNAVAILABLE", "down"),
        ]
    )
    path = result.write_failures(tmp_path / "f.jsonl")
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == [3, 9]
    assert read_failures(path) == {3, 9}


def test_result_ids_are_compact_and_list_like() -> None:
    from pellucid.client.uploads import IdList

    derived = "0123456789abcdef0123456789abcdef"
    ids = IdList([derived, "my-own-id", "ABCDEF0123456789ABCDEF0123456789"])
    assert list(ids) == [derived, "my-own-id", "ABCDEF0123456789ABCDEF0123456789"]
    assert ids == [derived, "my-own-id", "ABCDEF0123456789ABCDEF0123456789"] and ids[-1].isupper()
    assert len(ids) == 3 and ids[1:] == ["my-own-id", "ABCDEF0123456789ABCDEF0123456789"]
    many = IdList(f"{i:032x}" for i in range(10_000))
    assert len(many._packed) == 160_000 and not many._other and many[9_999] == f"{9_999:032x}"
