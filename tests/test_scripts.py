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


def test_class_sensitivity_pairs_part_prints_a_row_per_method() -> None:
    """The pair table on the committed texture ResNet: one row per method, every value a share in [0, 1], IIA's
    paired difference to itself 0, and a method that does not apply to a CNN left out."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "class_sensitivity.py"
    command = [sys.executable, str(script), "--part", "pairs", "--n", "4", "--archs", "resnet", "--threads", "1"]
    finished = subprocess.run(
        [*command, "--methods", "iia", "gradcam", "attention_rollout"], capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr
    rows = [line for line in finished.stdout.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["iia", "gradcam"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")[1:]]
        means = [float(cell.split("±")[0].split(" ")[0]) for cell in cells[:4] if cell != "n/a"]
        assert means and all(0.0 <= value <= 1.0 for value in means), row
    assert rows[0].count("(Δ+0.000)") == 2
