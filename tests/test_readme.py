"""The README's quick tour runs as written (against the embedded server in a temp home)."""

import os
import re
from pathlib import Path

from pellucid.client import _embedded

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_tour_runs() -> None:
    tour = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    try:
        exec(compile(tour, "README.md", "exec"), {})
    finally:
        _embedded.forget(os.environ["PELLUCID_HOME"])
