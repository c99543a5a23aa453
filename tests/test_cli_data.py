"""`pellucid ls|mkdir|rmdir|rm|cp|cat` as a user runs them: subprocesses against a standalone server,
with their output, --json and exit codes (a cp that partly fails finishes the rest and exits 5)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import as_admin, pellucid
from tests.test_server_process import ServerProcess


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("cli-data") / "data")
    yield process
    process.stop()


def test_mkdir_ls_cat_rm_rmdir(standalone: ServerProcess, tmp_path: Path) -> None:
    admin = as_admin(standalone)
    assert pellucid("mkdir", "data://.my/notes", "--acl", "private", *admin).returncode == 0
    again = pellucid("mkdir", "data://.my/notes", *admin, "--json")
    assert again.returncode == 1 and json.loads(again.stderr)["error"]["code"] == "ALREADY_EXISTS"
    assert pellucid("mkdir", ".my/notes/a/b", "-p", *admin).returncode == 0  # no scheme, parents made
    (tmp_path / "hello.txt").write_text("hello\n")
    assert pellucid("cp", str(tmp_path / "hello.txt"), "data://.my/notes/", *admin).returncode == 0

    listed = pellucid("ls", "data://.my/notes", *admin)
    assert (listed.returncode, listed.stdout.split()) == (0, ["a/", "hello.txt"])
    long = pellucid("ls", "-l", "data://.my/notes", *admin).stdout.splitlines()
    assert long[1].split()[-2:] == ["6", "hello.txt"] and long[1][:4].isdigit()  # time, size, name
    as_json = json.loads(pellucid("ls", "--json", *admin).stdout)  # default: your collections
    assert [(c["name"], c["acl"], c["is_dir"]) for c in as_json] == [("notes", "private", True)]
    one_file = json.loads(pellucid("ls", "data://.my/notes/hello.txt", "--json", *admin).stdout)
    assert [(f["name"], f["size"]) for f in one_file] == [("hello.txt", 6)]

    cat = pellucid("cat", "data://.my/notes/hello.txt", "data://.my/notes/hello.txt", *admin)
    assert (cat.returncode, cat.stdout) == (0, "hello\nhello\n")
    missing = pellucid("cat", "data://.my/notes/nope.txt", *admin)
    assert missing.returncode == 4 and "does not exist" in missing.stderr

    not_empty = pellucid("rmdir", "data://.my/notes", *admin, "--json")
    assert not_empty.returncode == 1
    assert json.loads(not_empty.stderr)["error"]["details"]["reason"] == "DIRECTORY_NOT_EMPTY"
    assert pellucid("rm", "data://.my/notes/hello.txt", *admin).returncode == 0
    assert pellucid("rm", "data://.my/notes/hello.txt", *admin).returncode == 4
    assert pellucid("rmdir", "data://.my/notes/a/b", *admin).returncode == 0
    forced = pellucid("rmdir", "-f", "data://.my/notes", *admin, "--json")
    assert (forced.returncode, json.loads(forced.stdout)["deleted"]) == (0, 2)
    assert pellucid("ls", "data://.my/notes", *admin).returncode == 4


def test_another_users_private_data_is_not_found_and_public_is_read_only(standalone: ServerProcess) -> None:
    admin = as_admin(standalone)
    created = json.loads(pellucid("users", "create", "frank", "--json", *admin).stdout)
    frank = ["--api", f"grpc://{standalone.address}", "--pat", created["pat"]]
    assert pellucid("mkdir", "data://.my/open", "--acl", "public", *admin).returncode == 0
    assert pellucid("mkdir", "data://.my/closed", "--acl", "private", *admin).returncode == 0
    assert pellucid("ls", "data://admin", *frank).stdout.split() == ["open/"]
    assert pellucid("ls", "data://admin/closed", *frank).returncode == 4
    denied = pellucid("mkdir", "data://admin/open/mine", *frank)
    assert denied.returncode == 3 and "only 'admin' writes" in denied.stderr


def test_cp_up_and_down_recursively_and_between_collections(standalone: ServerProcess, tmp_path: Path) -> None:
    admin = as_admin(standalone)
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    files = {
        "a.txt": b"a" * 10,
        "sub/b.bin": os.urandom(2 * 1024 * 1024 + 3),  # a large one among small ones
        "sub/deeper/c.txt": b"",
    }
    for name, content in files.items():
        (tree / name).write_bytes(content)
    assert pellucid("mkdir", "data://.my/trees", *admin).returncode == 0

    up = pellucid("cp", "-r", "-c", "3", str(tree), "data://.my/trees", *admin, "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout) == {"copied": 3, "bytes": sum(map(len, files.values())), "failed": []}
    shallow = pellucid("cp", str(tree), "data://.my/trees", *admin)
    assert shallow.returncode == 5 and "pass -r" in shallow.stderr

    down = pellucid("cp", "-r", "data://.my/trees/tree", str(tmp_path / "back"), *admin)
    assert down.returncode == 0, down.stderr
    for name, content in files.items():
        assert (tmp_path / "back" / name).read_bytes() == content

    assert pellucid("mkdir", "data://.my/copies", *admin).returncode == 0
    across = pellucid("cp", "-r", "data://.my/trees/tree", "data://.my/copies", *admin)
    assert across.returncode == 0, across.stderr
    single = pellucid("cp", "data://.my/copies/tree/sub/b.bin", str(tmp_path / "b.bin"), *admin)
    assert single.returncode == 0 and (tmp_path / "b.bin").read_bytes() == files["sub/b.bin"]


def test_a_cp_that_partly_fails_copies_the_rest_and_lists_each_failure(
    standalone: ServerProcess, tmp_path: Path
) -> None:
    admin = as_admin(standalone)
    assert pellucid("mkdir", "data://.my/partial", *admin).returncode == 0
    good = [tmp_path / f"good{i}.txt" for i in range(3)]
    for path in good:
        path.write_text(path.name)
    assert pellucid("mkdir", "data://.my/partial/good1.txt", *admin).returncode == 0  # a directory takes this name
    sources = [str(p) for p in good] + [str(tmp_path / "missing.txt"), "data://.my/partial/nothing-here"]
    result = pellucid("cp", *sources, "data://.my/partial", *admin)
    assert result.returncode == 5, result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("pellucid: failed ")]
    assert len(failed) == 3
    assert any("good1.txt" in line and "is a directory" in line for line in failed)
    assert any("missing.txt" in line and "does not exist" in line for line in failed)
    assert any("nothing-here" in line and "does not exist" in line for line in failed)
    assert "3 of 5 file(s) failed (2 copied)" in result.stderr
    listed = pellucid("ls", "data://.my/partial", *admin).stdout.split()
    assert sorted(listed) == ["good0.txt", "good1.txt/", "good2.txt"]  # the others were copied

    as_json = pellucid("cp", *sources, "data://.my/partial", *admin, "--json")
    summary = json.loads(as_json.stdout)
    assert as_json.returncode == 5 and summary["copied"] == 2 and len(summary["failed"]) == 3
    assert sorted(f["exit_code"] for f in summary["failed"]) == [1, 2, 4]


def test_a_cp_that_reaches_no_server_says_so_as_one_error(tmp_path: Path) -> None:
    """Exit code 5 as for some files failing, but told apart: one "server unreachable" error, and with
    --json an error object on stderr instead of a summary on stdout."""
    from tests.test_cli import closed_port

    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    nowhere = ["--api", f"grpc://127.0.0.1:{closed_port()}", "--pat", "pel_pat_x", "--timeout", "1"]
    sources = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    for dest in ("data://.my/c/", "data://.my/c"):  # the upload fails; the destination's check fails
        text = pellucid("cp", *sources, dest, *nowhere)
        assert text.returncode == 5 and "server unreachable, nothing was copied" in text.stderr, text.stderr
        assert "pellucid: failed " not in text.stderr
        as_json = pellucid("cp", *sources, dest, *nowhere, "--json")
        error = json.loads(as_json.stderr)["error"]
        assert (as_json.returncode, as_json.stdout) == (5, "")
        assert error["type"] == "ServerUnreachable" and error["exit_code"] == 5
