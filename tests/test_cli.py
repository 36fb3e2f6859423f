"""The hf-iia command line, run in-process through its main()."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from hf_iia.tools.cli import main


def test_explain_writes_overlays_and_maps(tiny_folder, tmp_path, capsys):
    images = []
    for i in range(2):
        path = tmp_path / f"photo {i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    out = tmp_path / "out"
    assert main(["explain", str(tiny_folder("resnet")), *images, "--out", str(out), "--target", "dog", "--steps", "2"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in records] == ["dog", "dog"]
    heatmap = np.load(out / "photo_0_iia.npy")
    assert heatmap.shape == (32, 32) and 0 <= heatmap.min() and heatmap.max() <= 1
    assert Image.open(out / "photo_1_iia.png").size == (50, 40)
    assert main(["explain", str(tiny_folder("resnet")), images[0], "--out", str(out)]) == 2  # no silent overwrite
    assert "exists" in capsys.readouterr().err


def test_demo_runs_offline(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = {json.loads(line)["image"]: json.loads(line) for line in lines if line.startswith("{")}
    assert "tabby" in records["chelsea"]["label"] and records["coffee"]["label"] == "espresso"
    grid = Image.open(tmp_path / "demo_grid.png")
    assert grid.width >= 1000
