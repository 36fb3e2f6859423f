"""hf_iia.tools.audit / hf_iia.tools.audit.cards: a planted corner cue is flagged, resume after SIGKILL, 2 processes == 1, errors.

The cue scenario is honest: two tiny ResNets (real ``transformers`` models, saved with
``save_pretrained`` and loaded back through the public API) are trained for 60 steps on
images that carry a coloured object in the middle and a coloured patch in the top-left
corner. For the *corner* model only the corner colour tells the class (the object's colour
is random); for the *object* model only the object's colour does. Both reach 100% on the
audit images, where both cues agree with the label, so only their attributions can tell
them apart: the audit must flag the corner model and pass the object model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from transformers import ViTImageProcessor

from hf_iia.data import DatasetColumnError, DatasetImageError
from hf_iia.outputs import OutputPathError
from hf_iia.testing import build_tiny
from hf_iia.tools.audit import AuditConfig, AuditError, region_shares, run_audit
from hf_iia.tools.cli import main

REPO = Path(__file__).resolve().parents[1]
SIZE = 48
NAMES = ["red", "green", "blue"]
OBJECT_COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]
CORNER_COLOURS = [(240, 240, 0), (240, 0, 240), (0, 240, 240)]
N, BATCH = 24, 2

torch.set_num_threads(1)
datasets.disable_progress_bars()


def cue_images(n: int, seed: int, informative: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` grey-noise images with a 16 px object and an 8 px top-left patch; ``informative`` names the cue(s)
    whose colour encodes the label (the other cue gets a random colour of its palette).

    Returns:
        images ``uint8 [n, 48, 48, 3]``, object masks ``bool [n, 48, 48]``, labels ``int64 [n]``.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(90, 166, (n, SIZE, SIZE, 3)).astype(np.uint8)
    masks = np.zeros((n, SIZE, SIZE), dtype=bool)
    for i, label in enumerate(labels):
        y, x = rng.integers(12, 21, 2)
        images[i, y : y + 16, x : x + 16] = OBJECT_COLOURS[label if "object" in informative else rng.integers(3)]
        masks[i, y : y + 16, x : x + 16] = True
        images[i, :8, :8] = CORNER_COLOURS[label if "corner" in informative else rng.integers(3)]
    return images, masks, labels


def train_cue_model(informative: str, folder: Path, steps: int = 60) -> Path:
    """Train a tiny ResNet for ``steps`` Adam steps on ``informative``-cue images; save it with its processor."""
    model, _ = build_tiny("resnet", dict(enumerate(NAMES)), seed=0)
    images, _, labels = cue_images(steps * 32, 1, informative)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # the processor's mean = std = 0.5
    targets = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = slice(step * 32, (step + 1) * 32)
        loss = torch.nn.functional.cross_entropy(model(pixels[batch]).logits, targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Path]:
    """The two trained models and the audit dataset (both cues agree with the label), saved to disk."""
    root = tmp_path_factory.mktemp("cue")
    images, masks, labels = cue_images(N, 2, "corner+object")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Array2D((SIZE, SIZE), "uint8"),
            "label": datasets.ClassLabel(names=NAMES),
        }
    )
    columns = {
        "image": [Image.fromarray(image) for image in images],
        "mask": masks.astype(np.uint8),
        "label": labels.tolist(),
    }
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(root / "data")
    return {
        "data": root / "data",
        "corner": train_cue_model("corner", root / "corner_model"),
        "object": train_cue_model("object", root / "object_model"),
    }


def config(model: Path, data: Path, **options) -> AuditConfig:
    return AuditConfig(
        **{"model": str(model), "dataset": str(data), "n": N, "batch_size": BATCH, "mask_column": "mask", **options}
    )


@pytest.fixture(scope="module")
def reference(scenario, tmp_path_factory) -> dict[str, dict]:
    """One uninterrupted in-process audit per model: ``{model: {"summary", "out"}}``."""
    audits = {}
    for model in ("corner", "object"):
        out = tmp_path_factory.mktemp(f"audit_{model}")
        summary = run_audit(config(scenario[model], scenario["data"]), out, progress=False)
        audits[model] = {"summary": summary, "out": out}
    return audits


def _results(out: Path) -> pd.DataFrame:
    """``results.parquet`` sorted by method and row, with ``heatmap`` as ``[H, W]`` float32 arrays."""
    table = pq.read_table(out / "results.parquet")
    frame = table.drop_columns(["heatmap"]).to_pandas()
    frame["heatmap"] = list(table["heatmap"].combine_chunks().to_numpy_ndarray().astype(np.float32))
    return frame.sort_values(["method", "index"], kind="stable").reset_index(drop=True)


def assert_same_results(a: Path, b: Path) -> None:
    left, right = _results(a), _results(b)
    assert len(left) == len(right) == 2 * N
    for column in left.columns:
        if column == "heatmap":
            np.testing.assert_allclose(np.stack(left[column]), np.stack(right[column]), atol=2e-3)
        elif left[column].dtype.kind == "f":
            np.testing.assert_allclose(left[column], right[column], rtol=1e-4, atol=1e-5, err_msg=column)
        else:
            assert left[column].tolist() == right[column].tolist(), column


def test_corner_cue_is_flagged_and_object_model_is_not(reference):
    corner, honest = reference["corner"]["summary"], reference["object"]["summary"]
    for summary in (corner, honest):
        assert summary["methods"] == ["iia", "gradcam"] and summary["has_masks"] and summary["rows"] == N
        assert summary["overall"]["iia"]["accuracy"] == 1.0  # both cues agree here: accuracy cannot tell them apart
    flagged = corner["verdict"]["iia"]["flagged"]
    assert sorted(entry["name"] for entry in flagged) == sorted(NAMES)
    for entry in corner["classes"]["iia"]:
        assert entry["corner"] == "top-left"
        assert any(reason.startswith("corner") for reason in entry["flags"])
        assert any(reason.startswith("off-object") for reason in entry["flags"])
    assert honest["verdict"]["iia"]["flagged"] == []
    assert honest["verdict"]["iia"]["text"].startswith("No class concentrates")
    # The object model's maps sit on the object; the corner model's do not.
    assert honest["overall"]["iia"]["object_mass"] > 2 * corner["overall"]["iia"]["object_mass"]
    assert honest["overall"]["iia"]["mask_ap"] > 0.5 > corner["overall"]["iia"]["mask_ap"]


def test_outputs_card_and_raw_results(reference):
    out, summary = reference["corner"]["out"], reference["corner"]["summary"]
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "audit_grid.png",
        "raw",
        "results.json",
        "results.parquet",
        "summary.json",
    ]
    card = ModelCard.load(out / "README.md")
    assert "hf-iia" in card.data.tags and card.data.pipeline_tag == "image-classification"
    metrics = {(result.metric_type, result.metric_name) for result in card.data.eval_results}
    assert ("deletion_auc", "Deletion AUC (iia)") in metrics and ("mask_ap", "Mask AP (gradcam)") in metrics
    assert "## Attribution audit" in card.text and "![attribution overlays](audit_grid.png)" in card.text
    assert "corner: " in card.text and "⚠" in card.text
    stored = json.loads((out / "results.json").read_text())
    assert stored["verdict"] == summary["verdict"] and len(stored["results"]) == 2 * N
    small = json.loads((out / "summary.json").read_text())  # results.json without the per-row results
    assert small == {key: value for key, value in stored.items() if key != "results"} == summary
    frame = _results(out)
    assert frame.groupby("method")["index"].apply(list).to_dict() == {m: list(range(N)) for m in ("gradcam", "iia")}
    shares = region_shares(np.stack(frame["heatmap"]), AuditConfig("m", "d").thresholds)
    np.testing.assert_allclose(shares["top_left_mass"], frame["top_left_mass"], atol=1e-3)
    with Image.open(out / "audit_grid.png") as grid:
        assert grid.width == 6 * 160 and grid.height >= 3 * 160


def _command(scenario: dict[str, Path], out: Path) -> list[str]:
    return [
        "audit",
        str(scenario["corner"]),
        "--dataset",
        str(scenario["data"]),
        "--n",
        str(N),
        "--batch-size",
        str(BATCH),
        "--masks",
        "mask",
        "--out",
        str(out),
    ]


def _sandbox(home: Path) -> dict[str, str]:
    """Make ``home`` and return the environment of a child run whose home and caches lie in it (to catch writes
    outside --out). Matplotlib creates its config folder on import, so it is made beforehand."""
    (home / "mpl").mkdir(parents=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "HF_HOME": str(home / "hf"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "MPLCONFIGDIR": str(home / "mpl"),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("HF_DATASETS_CACHE", None)
    return env


def test_resume_after_sigkill_loses_and_duplicates_nothing(scenario, reference, tmp_path):
    out, home = tmp_path / "out", tmp_path / "home"
    env = _sandbox(home)
    command = [sys.executable, "-m", "hf_iia.tools.cli", *_command(scenario, out)]
    process = subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    batches = out / "raw" / "batches"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(batches.glob("*.parquet"))) < 3 and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = sorted(batches.glob("*.parquet"))
    assert 3 <= len(done) < N // BATCH, "the run was not killed mid-way"
    assert not (out / "README.md").exists()
    finished = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "iia: 3 of 3 classes concentrate their attribution off-object" in finished.stdout
    assert len(list(batches.glob("*.parquet"))) == N // BATCH and not list(out.rglob("*.tmp"))
    assert_same_results(out, reference["corner"]["out"])
    assert list(home.rglob("*")) == [home / "mpl"], f"files written outside --out: {list(home.rglob('*'))}"


def test_two_accelerate_processes_equal_one(scenario, reference, tmp_path):
    out, env = tmp_path / "out", _sandbox(tmp_path / "home")
    # `accelerate launch --cpu --num_processes 2` starts a single process unless MPI is set up; Accelerate's
    # torchrun launcher (named --multi_gpu) starts two, which join over gloo on a machine without GPU.
    with socket.socket() as probe:  # a free port for the rendezvous, so parallel runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
    ]
    command = [*launch, str(REPO / "scripts" / "audit.py"), *_command(scenario, out)[1:], "--device", "cpu"]
    finished = subprocess.run(command, cwd=tmp_path / "home", env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "process 1/2" in finished.stderr  # the batches were split between two processes
    assert_same_results(out, reference["corner"]["out"])


def test_streamed_image_folder_shorter_than_n(scenario, tmp_path):
    folder = tmp_path / "folder"
    images, _, labels = cue_images(5, 3, "corner+object")
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / NAMES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / NAMES[label] / f"{i}.png")
    settings = AuditConfig(
        model=str(scenario["corner"]), dataset=str(folder), n=50, batch_size=4, steps=1, perturbation_steps=4
    )
    summary = run_audit(settings, tmp_path / "out", progress=False)
    assert summary["rows"] == 5 and not summary["has_masks"]  # the stream ended before n; no masks here
    assert json.loads((tmp_path / "out" / "raw" / "end.json").read_text()) == {"rows": 5}
    assert {entry["name"] for entry in summary["classes"]["iia"]} == set(NAMES)
    (folder / "red" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetImageError, match=r"row \d+ \(.*red/0\.png\): the image cannot be decoded"):
        run_audit(settings, tmp_path / "broken", progress=False)


def test_bad_settings_are_clear_errors(scenario, reference, tmp_path):
    with pytest.raises(DatasetColumnError, match=r"no image column 'picture'.*\['image', 'label', 'mask'\]"):
        run_audit(config(scenario["object"], scenario["data"], image_column="picture"), tmp_path / "a", progress=False)
    with pytest.raises(DatasetColumnError, match="no mask column 'segmentation'"):
        run_audit(
            config(scenario["object"], scenario["data"], mask_column="segmentation"), tmp_path / "b", progress=False
        )
    with pytest.raises(AuditError, match=r"other settings \(n differ\)"):
        run_audit(config(scenario["corner"], scenario["data"], n=N - 2), reference["corner"]["out"], progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # settings are checked before writing
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="not empty"):
        run_audit(config(scenario["object"], scenario["data"]), tmp_path / "c", progress=False)


_SHAPES = dict(enumerate(["circle", "square", "triangle", "cross", "ring", "star"]))


@pytest.mark.parametrize("arch, comparison", [("resnet", "gradcam"), ("vit", "gae")])
def test_cli_audit_on_builtin_synthetic_dataset(arch, comparison, tmp_path, capsys):
    build_tiny(arch, _SHAPES, seed=0)[0].save_pretrained(tmp_path / "model")  # random-weight 6 classes, 32 px
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "model")
    code = main(
        [
            "audit",
            str(tmp_path / "model"),
            "--dataset",
            "synthetic-shortcut",
            "--n",
            "6",
            "--batch-size",
            "3",
            "--steps",
            "1",
            "--perturbation-steps",
            "4",
            "--image-size",
            "40",
            "--out",
            str(tmp_path / "card"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{comparison}: " in printed and f"wrote {tmp_path / 'card' / 'README.md'}" in printed
    summary = json.loads((tmp_path / "card" / "results.json").read_text())
    assert summary["methods"] == ["iia", comparison]
    assert summary["has_masks"] and summary["rows"] == 6 and summary["input_size"] == [32, 32]
