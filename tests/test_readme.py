"""Every ```python block of the README runs as written, twice in a row, on a fresh embedded data dir.

The blocks run in order, in one scratch directory holding what the README assumes a reader
has: a checkout's `examples/` (its paths are relative to the repository), and the files a
reader brings, made here (USER_FILES: the README says which lines stand for files of yours).
A block whose first line is `# NAME.py` is a file the reader saves: it is written there
(and run, which only defines things). A `pellucid runner start ...` line of a ```sh block
is started in the background, as the README tells the reader to, before the blocks after it.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pellucid.client import _embedded
from tests.media_samples import png

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUNNER_LINE = "pellucid runner start "
# what the README's snippets call "files of yours"
USER_FILES: dict[str, bytes] = {
    "cat.png": png("cat", side=16),
    "review.txt": b"Arrived broken, and the seller never answered.",
    "photos/cat/1.png": png("photo-cat-1", side=16),
    "photos/cat/2.png": png("photo-cat-2", side=16),
    "photos/dog/1.png": png("photo-dog-1", side=16),
}


def blocks() -> list[tuple[str, str, int]]:
    """(language, code, line number) of each fenced block, in order."""
    text = README.read_text()
    return [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 2)
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
    ]


def test_the_readme_has_python_blocks_and_a_runner_line() -> None:
    found = blocks()
    assert sum(lang == "python" for lang, _, _ in found) >= 5
    assert any(line.startswith(RUNNER_LINE) for lang, code, _ in found if lang == "sh" for line in code.splitlines())


def test_every_python_block_runs_twice_in_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PELLUCID_SERVER_HTTP_PORT", "0")  # the Deployments section posts over HTTP
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for name, data in USER_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    runners: list[subprocess.Popen[bytes]] = []
    try:
        for run in (1, 2):
            for lang, code, line in blocks():
                if lang == "sh" and run == 1:
                    runners += [
                        start(command, tmp_path) for command in code.splitlines() if command.startswith(RUNNER_LINE)
                    ]
                if lang != "python":
                    continue
                first = code.splitlines()[0]
                if re.fullmatch(r"# [\w-]+\.py", first):
                    (tmp_path / first[2:]).write_text(code)
                try:
                    exec(compile(code, f"README.md line {line}", "exec"), {"__name__": "readme"})
                except Exception as exc:
                    for proc in runners:
                        proc.poll()
                    logs = "".join((tmp_path / f"runner-{p.pid}.log").read_text() for p in runners)
                    raise AssertionError(
                        f"run {run}: the block at README.md line {line} failed: {exc!r}\nrunner logs:\n{logs}"
                    ) from exc
    finally:
        for proc in runners:  # before the embedded server stops: runners must not outlive it here
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        _embedded.forget(os.environ["PELLUCID_HOME"])


def start(command: str, cwd: Path) -> subprocess.Popen[bytes]:
    """A CLI line of the README, in the background (the `pellucid` of this interpreter)."""
    args = shlex.split(command, comments=True)
    assert args[0] == "pellucid"
    with (cwd / "runner.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pellucid.cli", *args[1:]], cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
    (cwd / "runner.log").rename(cwd / f"runner-{proc.pid}.log")
    return proc
