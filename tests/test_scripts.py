"""Every script in ``scripts/`` starts and prints its help: a renamed helper it imports fails here.

The scripts run in their own interpreter, as a user runs them (tests never import scripts).
The GPU check in particular never runs in CI (no CUDA), so its ``--help`` is the only place
its imports are checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: path.name)
def test_script_help(path: Path) -> None:
    finished = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "usage:" in finished.stdout
