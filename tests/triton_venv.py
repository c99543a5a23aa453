"""The virtualenv the tritonclient tests run their client in (tests/test_oip_triton.py).

tritonclient pins protobuf < 7, pellucid's dev environment runs the newest protobuf: so the stock
client gets a venv of its own, at .venv-triton in the repository, with tritonclient[grpc,http]
from PyPI and pellucid itself (the same resolve a user's `pip install pellucid tritonclient`
does). `make test` creates it first (`python tests/triton_venv.py`, about a minute on a fresh
machine); the tests create it if it is missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-triton"
REQUIREMENTS = ["tritonclient[grpc,http]==2.73.0"]
STAMP = VENV / ".installed"


def python() -> Path:
    """The venv's interpreter, creating the venv when it is missing or was made for other requirements."""
    wanted = "\n".join([*REQUIREMENTS, (ROOT / "pyproject.toml").read_text()])
    if not (STAMP.exists() and STAMP.read_text() == wanted):
        if not (VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", *REQUIREMENTS, "-e", str(ROOT)],
            check=True,
        )
        STAMP.write_text(wanted)
    return VENV / "bin" / "python"


if __name__ == "__main__":
    print(python())
