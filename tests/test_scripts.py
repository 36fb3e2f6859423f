"""Every script in ``scripts/`` starts and prints its help: a renamed helper it imports fails here.

The scripts run in their own interpreter, as a user runs them (tests never import scripts).
The GPU check in particular never runs in CI (no CUDA), so its ``--help`` is the only place
its imports are checked.
"""

from __future__ import annotations

import json
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


def test_design_search_rows_the_script_finishes(tmp_path: Path) -> None:
    """The rows whose maps the script finishes, on the committed texture ViT: AttnLRP and IG pooled to the token grid
    (another map: its mask AP differs on every image), IIA's map times Attention Rollout's (another ranking on some
    image) and IIA's map squared (the same ranking: mask AP equal, energy pointing game not), every share in [0, 1]."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "design_search.py"
    command = [sys.executable, str(script), "--split", "report", "--models", "textures-vit", "--n", "2"]
    options = ["--no-information", "--no-class-sensitivity", "--perturbation-steps", "5", "--threads", "1"]
    labels = ["attnlrp", "attnlrp-token-grid", "ig", "ig-token-grid", "iia", "iia-x-rollout", "iia^2"]
    finished = subprocess.run(
        [*command, *options, "--configs", *labels, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr
    rows = json.loads((tmp_path / "results.json").read_text())["models"]["textures-vit"]["rows"]
    assert list(rows) == labels
    for method in ("attnlrp", "ig"):
        pixel, pooled = rows[method]["mask_ap"], rows[f"{method}-token-grid"]["mask_ap"]
        assert all(abs(a - b) > 1e-6 for a, b in zip(pixel, pooled, strict=True)), method
    assert any(abs(a - b) > 1e-6 for a, b in zip(rows["iia"]["mask_ap"], rows["iia-x-rollout"]["mask_ap"], strict=True))
    assert rows["iia^2"]["mask_ap"] == pytest.approx(rows["iia"]["mask_ap"], abs=1e-4)
    energy, sharper = rows["iia"]["energy_pointing_game"], rows["iia^2"]["energy_pointing_game"]
    assert all(abs(a - b) > 1e-4 for a, b in zip(energy, sharper, strict=True))
    for row in rows.values():
        shares = row["energy_pointing_game"] + row["mask_ap"]
        assert len(shares) == 4 and all(0.0 <= value <= 1.0 for value in shares)
