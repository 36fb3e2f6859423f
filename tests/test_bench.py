"""The benchmark runner (``hf-iia bench``) on tiny real checkpoints: files, structure, recomputability, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import ViTImageProcessor

from hf_iia import IIAExplainer
from hf_iia.metrics import map_correlation
from hf_iia.testing import build_tiny, depth_width
from hf_iia.tools.bench.inputs import synthetic_inputs
from hf_iia.tools.bench.run import CROPS, METHOD_SPECS, crop_photos, synthetic_heldout
from hf_iia.tools.bench.stats import summarise, t_quantile
from hf_iia.tools.cli import main
from hf_iia.tools.synthetic import CLASS_NAMES

SIZE = 32
N = 4
IIA_METHODS = ["iia", "iia-reference", "iia-multilayer", "iia3"]
CAMS = ["gradcam", "gradcam++", "layercam", "scorecam"]  # on a ViT: the token grid
CNN_METHODS = [*IIA_METHODS, "iia3-earliest", "iia3-product", "ig", *CAMS]
VIT_METHODS = [*IIA_METHODS, "ig", *CAMS, "attention_rollout", "gradient_rollout", "gae", "attnlrp", "legrad"]
LOCALISATION = ["pointing_game", "energy_pointing_game", "mask_ap"]
PERTURBATION = ["deletion_auc", "insertion_auc"]
SENSITIVITY = ["class_sensitivity"]


def _save(model, folder: Path, heldout_start: int) -> None:
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )
    log = {
        "train_indices": [0, 1000],
        "heldout_indices": [heldout_start, heldout_start + 100],
        "data_seed": 0,
        "size": SIZE,
    }
    (folder / "train_log.json").write_text(json.dumps(log))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """``<dir>/resnet`` and ``<dir>/vit``: tiny random 6-class checkpoints with a train_log.json, like the trained ones."""
    root = tmp_path_factory.mktemp("bench_models")
    labels = dict(enumerate(CLASS_NAMES))
    resnet, _ = build_tiny("resnet", labels, **depth_width("resnet", depth=3))
    _save(resnet, root / "resnet", 10_000_000)
    vit, _ = build_tiny("vit", labels, hidden_size=32, intermediate_size=64)  # 2 blocks, 2 heads, 32 px
    _save(vit, root / "vit", 10_000_000)
    return root


def _bench(models_dir: Path, out: Path) -> dict:
    argv = [
        "bench",
        "--suite",
        "synthetic",
        "--out",
        str(out),
        "--n",
        str(N),
        "--models-dir",
        str(models_dir),
        "--perturbation-steps",
        "4",
        "--batch-size",
        "3",
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def synthetic_run(models_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench_out") / "run"
    return out, _bench(models_dir, out)


def test_synthetic_bench_writes_the_three_files(synthetic_run):
    out, results = synthetic_run
    assert sorted(p.name for p in out.iterdir()) == ["maps.png", "results.json", "results.md"]
    assert results["suite"] == "synthetic" and [m["name"] for m in results["models"]] == ["vit", "resnet"]
    families = {m["name"]: (m["family"], list(m["methods"])) for m in results["models"]}
    assert families == {"resnet": ("cnn", CNN_METHODS), "vit": ("vit", VIT_METHODS)}
    for model in results["models"]:
        assert model["heldout"] == {"start": 10_000_000, "seed": 0, "size": SIZE, "n": N}
        assert [r["id"] for r in model["inputs"]] == [f"synthetic-{10_000_000 + i}" for i in range(N)]
        assert [r["target"] for r in model["inputs"]] == [(10_000_000 + i) % 6 for i in range(N)]
        for key, method in model["methods"].items():
            assert sorted(method["per_image"]) == sorted(LOCALISATION + PERTURBATION + SENSITIVITY)
            assert all(len(values) == N for values in method["per_image"].values())
            assert set(model["timing"][key]) == {"seconds", "seconds_per_map"}
        assert set(model["paired_vs_iia"]) == set(model["methods"]) - {"iia"}
    resnet = next(m for m in results["models"] if m["name"] == "resnet")
    assert resnet["methods"]["iia-multilayer"]["explainer"]["levels"] == [
        "resnet.encoder.stages.1",
        "resnet.encoder.stages.2",
    ]
    vit = next(m for m in results["models"] if m["name"] == "vit")
    assert vit["methods"]["iia-multilayer"]["explainer"]["levels"] == ["layers.0", "layers.1"]
    difference = resnet["iia_vs_reference_max_abs_map_difference"]
    integrands = {resnet["methods"][k]["explainer"]["integrand"] for k in ("iia", "iia-reference")}
    if len(integrands) == 1:  # last stage -> pool -> linear: the inner path only rescales, same maps
        assert difference < 1e-4 and "the same maps" in resnet["note"]
    else:
        assert "integrands differ" in resnet["note"]

    text = (out / "results.md").read_text()
    assert "## vit (vit, 4 inputs)" in text and "## resnet (cnn, 4 inputs)" in text
    assert "| method | pointing game ↑ | energy PG ↑ | mask AP ↑ | DEL ↓ | INS ↑ | class sens. ↑ | s / map |" in text
    for key in CNN_METHODS + VIT_METHODS:
        assert f"| `{key}` |" in text
    assert "hf-iia bench --suite synthetic" in text

    figure = Image.open(out / "maps.png")
    rows = 2 * 3  # two models x three inputs each
    columns = 1 + max(len(CNN_METHODS), len(VIT_METHODS))  # the input, then one map per method
    assert figure.size == (columns * 160, rows * (160 + 18))


def test_results_json_numbers_recompute_from_per_image_values(synthetic_run):
    _, results = synthetic_run
    scipy_stats = pytest.importorskip("scipy.stats")
    for model in results["models"]:
        for key, method in model["methods"].items():
            for metric, all_values in method["per_image"].items():
                # None: undefined on that input (the class sensitivity where a map is constant); left out
                values = [v for v in all_values if v is not None]
                if metric != "class_sensitivity":
                    assert len(values) == N
                summary, n = method["summary"][metric], len(values)
                if n < 2:
                    continue
                assert summary["n"] == n and summary["mean"] == pytest.approx(np.mean(values), abs=1e-12)
                half = scipy_stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
                assert summary["half_width"] == pytest.approx(half, rel=1e-9, abs=1e-12)
                assert summary["ci_low"] == pytest.approx(summary["mean"] - half, abs=1e-9)
                if key != "iia":
                    pairs = zip(all_values, model["methods"]["iia"]["per_image"][metric], strict=True)
                    diff = [a - b for a, b in pairs if a is not None and b is not None]
                    if len(diff) > 1:
                        assert model["paired_vs_iia"][key][metric]["mean"] == pytest.approx(np.mean(diff), abs=1e-12)
            assert all(v in (0.0, 1.0) for v in method["per_image"]["pointing_game"])
            assert all(0 <= v <= 1 for m in PERTURBATION for v in method["per_image"][m])


def _deterministic_part(results: dict) -> dict:
    results = json.loads(json.dumps(results))
    for key in ("timing", "machine"):
        results.pop(key)
    results["settings"].pop("command")
    for model in results["models"]:
        model.pop("timing")
    return results


def test_bench_is_deterministic_and_refuses_to_overwrite(models_dir, synthetic_run, tmp_path, capsys):
    out, first = synthetic_run
    second = _bench(models_dir, tmp_path / "again")
    assert _deterministic_part(first) == _deterministic_part(second)
    argv = ["bench", "--suite", "synthetic", "--out", str(out), "--n", "1", "--models-dir", str(models_dir)]
    assert main(argv) == 2 and "exists" in capsys.readouterr().err


def test_real_suite_on_a_tiny_checkpoint(models_dir, tmp_path):
    out = tmp_path / "real"
    argv = [
        "bench",
        "--suite",
        "real",
        "--out",
        str(out),
        "--n",
        "2",
        "--checkpoint",
        str(models_dir / "resnet"),
        "--methods",
        "iia",
        "gradcam",
        "gae",
        "--perturbation-steps",
        "3",
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    (model,) = results["models"]
    assert list(model["methods"]) == ["iia", "gradcam"]  # gae does not apply to a CNN
    assert [r["id"] for r in model["inputs"]] == ["chelsea-full", "coffee-full"]
    assert sorted(model["methods"]["iia"]["per_image"]) == sorted(PERTURBATION + SENSITIVITY)
    assert sorted(p.name for p in out.iterdir()) == ["maps.png", "results.json", "results.md"]  # no checkpoint built


def test_real_suite_crops_are_fixed():
    photos = [("a", Image.new("RGB", (100, 50))), ("b", Image.new("RGB", (40, 80)))]
    crops = crop_photos(photos)
    assert [name for name, _ in crops] == [f"{p}-{c}" for c, _ in CROPS for p in ("a", "b")]
    assert [image.size for _, image in crops[:4]] == [(100, 50), (40, 80), (80, 40), (32, 64)]
    assert len(CROPS) * 7 >= 30


def test_heldout_range_is_read_and_checked(models_dir, tmp_path):
    assert synthetic_heldout(models_dir / "resnet", 10, 32) == {"start": 10_000_000, "seed": 0, "size": SIZE}
    assert synthetic_heldout(tmp_path, 10, 48) == {"start": 10_000_000, "seed": 0, "size": 48}  # no log: convention
    (tmp_path / "train_log.json").write_text(json.dumps({"train_indices": [0, 500], "heldout_indices": [100, 200]}))
    with pytest.raises(ValueError, match="overlap"):
        synthetic_heldout(tmp_path, 10, 32)


def test_unknown_method_is_refused(models_dir, tmp_path, capsys):
    argv = [
        "bench",
        "--suite",
        "synthetic",
        "--out",
        str(tmp_path),
        "--models-dir",
        str(models_dir),
        "--methods",
        "lime",
    ]
    assert main(argv) == 2 and "unknown bench method" in capsys.readouterr().err


def test_t_interval():
    scipy_stats = pytest.importorskip("scipy.stats")
    for dof in (1, 3, 34, 299):
        assert t_quantile(0.975, dof) == pytest.approx(scipy_stats.t.ppf(0.975, dof), abs=1e-9)
    assert summarise([1.0])["half_width"] is None and summarise([])["n"] == 0
    assert set(METHOD_SPECS) == set(CNN_METHODS) | set(VIT_METHODS)


PAPER = ["pos_auc", "neg_auc", "del_prob_auc", "ins_prob_auc", "adp", "pic", "sic", "aic"]
SEGMENTATION = ["seg_pixel_accuracy", "seg_miou", "seg_map", "seg_mf1"]


def test_paper_protocol_adds_its_columns(models_dir, tmp_path):
    out = tmp_path / "paper"
    argv = ["bench", "--suite", "synthetic", "--protocol", "paper", "--out", str(out), "--n", "3"]
    argv += ["--models-dir", str(models_dir), "--archs", "vit", "--methods", "iia", "ig", "--perturbation-steps", "3"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["protocol"] == "paper" and "--protocol paper" in results["settings"]["command"]
    (model,) = results["models"]
    ranges = {"pos_auc": 90, "neg_auc": 90, "del_prob_auc": 90, "ins_prob_auc": 90, "adp": 100, "pic": 100}
    for method in model["methods"].values():
        per_image = method["per_image"]
        assert sorted(per_image) == sorted(LOCALISATION + PERTURBATION + PAPER + SEGMENTATION + SENSITIVITY)
        for metric in PAPER + SEGMENTATION:
            defined = [v for v in per_image[metric] if v is not None]
            assert len(per_image[metric]) == 3 and method["summary"][metric]["n"] == len(defined)
            if metric not in ("sic", "aic"):  # only the information curves may be undefined on an input
                assert len(defined) == 3
            assert all(math.isfinite(v) and 0 <= v <= ranges.get(metric, 1) for v in defined)
        assert all(v in (0.0, 100.0) for v in per_image["pic"])
    text = (out / "results.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method |"))
    for title in ("POS ↓", "NEG ↑", "DEL (paper) ↓", "INS (paper) ↑", "ADP ↓", "PIC ↑", "SIC ↑", "AIC ↑"):
        assert f" {title} |" in header
    for title in ("pixel acc. ↑", "mIoU ↑", "mAP ↑", "mF1 ↑"):
        assert f" {title} |" in header


@pytest.mark.parametrize(("name", "key"), [("resnet", "ig"), ("resnet", "iia"), ("vit", "iia"), ("vit", "gae")])
def test_class_sensitivity_compares_the_maps_of_the_target_and_the_least_likely_class(
    models_dir, synthetic_run, name, key
):
    """The column is 1 - r of two explanations by the public API: the target's map and the map of the input's
    lowest-probability other class (recorded per input)."""
    _, results = synthetic_run
    model = next(m for m in results["models"] if m["name"] == name)
    spec = METHOD_SPECS[key]
    explainer = IIAExplainer(str(models_dir / name), method=spec.method, progress=False, **dict(spec.options))
    inputs = synthetic_inputs(explainer, models_dir / name, N, 1, 8)
    probabilities = explainer.class_scores(explainer.logits(inputs.pixel_values)).double()
    second = [record["second_target"] for record in model["inputs"]]
    for i, (record, target) in enumerate(zip(model["inputs"], second, strict=True)):
        others = [c for c in range(probabilities.shape[1]) if c != record["target"]]
        assert target == min(others, key=lambda c: float(probabilities[i, c]))
    maps = explainer.attribute(inputs.pixel_values, inputs.targets)
    other_maps = explainer.attribute(inputs.pixel_values, second)
    expected = (1 - map_correlation(maps, other_maps)).tolist()
    values = model["methods"][key]["per_image"]["class_sensitivity"]
    for value, reference in zip(values, expected, strict=True):
        if value is None:
            assert math.isnan(reference)
        else:  # maps in [0, 1] agree to float32 noise of the batch shape (1e-5 of the range); r moves less
            assert value == pytest.approx(reference, abs=1e-4)
    assert any(value is not None and value > 1e-3 for value in values)  # the two maps differ
