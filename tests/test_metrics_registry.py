"""One declaration per metric (hf_iia.metrics.registry), one input module (hf_iia.metrics.inputs), and the README's
"Add a metric" example (tests/examples/add_a_metric.py) reaching the benchmark and the audit."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from hf_iia.errors import MetricError
from hf_iia.metrics import (
    Metric,
    MetricInputs,
    available_metrics,
    confidence_change,
    deletion_auc,
    energy_pointing_game,
    get_metric,
    information_curve,
    insertion_auc,
    map_correlation,
    mask_average_precision,
    paper_perturbation_auc,
    pointing_game,
    register_metric,
    segmentation_scores,
    unregister_metric,
)
from hf_iia.testing import build_tiny, pixels
from hf_iia.tools.audit import AuditConfig, run_audit
from hf_iia.tools.bench.run import DEFAULT_MODELS_DIR
from hf_iia.tools.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests" / "examples" / "add_a_metric.py"

DIRECTIONS = {
    "pointing_game": True,
    "energy_pointing_game": True,
    "mask_ap": True,
    "deletion_auc": False,
    "insertion_auc": True,
    "pos_auc": False,
    "neg_auc": True,
    "del_prob_auc": False,
    "ins_prob_auc": True,
    "adp": False,
    "pic": True,
    "sic": True,
    "aic": True,
    "seg_pixel_accuracy": True,
    "seg_miou": True,
    "seg_map": True,
    "seg_mf1": True,
    "class_sensitivity": True,
}


def test_available_metrics_lists_every_metric_once_with_its_direction():
    metrics = available_metrics()
    assert list(metrics) == list(DIRECTIONS)  # registration order = the tables' column order
    assert {key: metric.higher_is_better for key, metric in metrics.items()} == DIRECTIONS
    assert all(isinstance(metric, Metric) and metric.key == key for key, metric in metrics.items())
    # The energy pointing game's second name (the audit's column) reads as an alias of the canonical key.
    assert get_metric("object_mass") is metrics["energy_pointing_game"]
    available_metrics().clear()  # a copy: the registry is unchanged
    assert list(available_metrics()) == list(DIRECTIONS)


def test_a_taken_or_unknown_name_is_refused():
    with pytest.raises(MetricError, match="registered already"):
        register_metric(Metric("deletion_auc", "DEL", False, lambda inputs: inputs.maps.sum(dim=(1, 2))))
    with pytest.raises(MetricError, match="registered already"):
        register_metric(
            Metric("mass", "mass", True, lambda inputs: inputs.maps.sum(dim=(1, 2)), aliases=("object_mass",))
        )
    with pytest.raises(MetricError, match="unknown metric 'nope'"):
        get_metric("nope")
    assert list(available_metrics()) == list(DIRECTIONS)


def test_every_declaration_computes_what_its_function_computes():
    """Each registered metric's values equal a direct call of the public function it declares (right flags, right
    score, the shared ADP / PIC and segmentation results read once), on a real tiny model."""
    model, _ = build_tiny("resnet")
    x = pixels(3, size=32)
    torch.manual_seed(0)
    maps = torch.rand(3, 32, 32, dtype=torch.float64)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[:, 8:20, 10:26] = True
    targets = torch.tensor([0, 1, 2])
    norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    other_maps = torch.rand(3, 32, 32, dtype=torch.float64)
    batch = MetricInputs(
        maps,
        targets,
        x,
        model,
        masks,
        **norm,
        perturbation_steps=5,
        batch_size=4,
        pointing_tolerance=2,
        other_maps=other_maps,
    )
    change = confidence_change(model, x, maps, targets, batch_size=4, **norm)
    segmentation = segmentation_scores(maps, masks)
    expected = {
        "pointing_game": pointing_game(maps, masks, tolerance=2).double(),
        "energy_pointing_game": energy_pointing_game(maps, masks),
        "mask_ap": mask_average_precision(maps, masks),
        "deletion_auc": deletion_auc(model, x, maps, targets, steps=5, batch_size=4),
        "insertion_auc": insertion_auc(model, x, maps, targets, steps=5, batch_size=4),
        "pos_auc": paper_perturbation_auc(
            model, x, maps, targets, positive=True, score="accuracy", batch_size=4, **norm
        ),
        "neg_auc": paper_perturbation_auc(
            model, x, maps, targets, positive=False, score="accuracy", batch_size=4, **norm
        ),
        "del_prob_auc": paper_perturbation_auc(
            model, x, maps, targets, positive=True, score="probability", batch_size=4, **norm
        ),
        "ins_prob_auc": paper_perturbation_auc(
            model, x, maps, targets, positive=False, score="probability", batch_size=4, **norm
        ),
        "adp": change.drop,
        "pic": change.increase,
        "sic": information_curve(model, x, maps, targets, score="probability", batch_size=4, **norm).auc,
        "aic": information_curve(model, x, maps, targets, score="accuracy", batch_size=4, **norm).auc,
        "seg_pixel_accuracy": segmentation.pixel_accuracy,
        "seg_miou": segmentation.miou,
        "seg_map": segmentation.map,
        "seg_mf1": segmentation.mf1,
        "class_sensitivity": 1 - map_correlation(maps, other_maps),
    }
    for key, metric in available_metrics().items():
        assert metric.applies_to(batch)
        values = metric.values(batch)
        # Same computation, same order: equal up to float noise of the batch split (values in [0, 100]).
        for value, reference in zip(values, expected[key].tolist(), strict=True):
            if value is None:
                assert math.isnan(reference), key
            else:
                assert value == pytest.approx(reference, abs=1e-9), key
    assert not get_metric("deletion_auc").applies_to(MetricInputs(maps, targets))  # no forward: not computed
    assert not get_metric("mask_ap").applies_to(MetricInputs(maps, targets, x, model))  # no masks
    assert not get_metric("class_sensitivity").applies_to(MetricInputs(maps, targets, x, model))  # no second maps


def _load_example():
    """Import tests/examples/add_a_metric.py as a user would import their metric's file (the one other line)."""
    spec = importlib.util.spec_from_file_location("add_a_metric", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_metric_added_in_one_file_reaches_the_bench_and_the_audit(tmp_path):
    _load_example()
    try:
        metric = available_metrics()["top_decile_mass"]
        assert metric.higher_is_better and list(available_metrics())[-1] == "top_decile_mass"

        bench = ["bench", "--suite", "synthetic", "--out", str(tmp_path / "bench"), "--n", "2"]
        bench += ["--models-dir", str(DEFAULT_MODELS_DIR), "--archs", "resnet", "--methods", "iia", "gradcam"]
        assert main([*bench, "--perturbation-steps", "2", "--threads", "1"]) == 0
        (model,) = json.loads((tmp_path / "bench" / "results.json").read_text())["models"]
        for result in model["methods"].values():
            values = result["per_image"]["top_decile_mass"]
            assert len(values) == 2 and all(0.1 - 1e-9 <= value <= 1 for value in values)
            assert result["summary"]["top_decile_mass"]["n"] == 2
        assert "top_decile_mass" in model["paired_vs_iia"]["gradcam"]
        assert "| top-10 % mass ↑ | s / map |" in (tmp_path / "bench" / "results.md").read_text()

        config = AuditConfig(
            model=str(DEFAULT_MODELS_DIR / "resnet"),
            dataset="synthetic",
            n=6,
            batch_size=6,
            steps=1,
            perturbation_steps=2,
        )
        summary = run_audit(config, tmp_path / "audit", progress=False)
        for method in summary["methods"]:
            assert 0.1 - 1e-9 <= summary["overall"][method]["top_decile_mass"] <= 1
        rows = pd.read_parquet(tmp_path / "audit" / "results.parquet", columns=["top_decile_mass"])
        assert len(rows) == 12 and rows["top_decile_mass"].between(0.1 - 1e-9, 1).all()
        assert "top-10 % mass ↑" in (tmp_path / "audit" / "README.md").read_text()
    finally:
        unregister_metric("top_decile_mass")
    assert "top_decile_mass" not in available_metrics()


def test_the_core_imports_no_metric_and_no_tool():
    """Importing the core (presets' start="blur" included) loads neither hf_iia.metrics nor hf_iia.tools."""
    code = (
        "import sys, hf_iia.presets, hf_iia.imaging, hf_iia.engine, hf_iia.fusions, hf_iia.explainer; "
        "print([m for m in sys.modules if m.startswith(('hf_iia.metrics', 'hf_iia.tools'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_metrics_import_neither_transformers_nor_the_explainer():
    code = (
        "import sys, hf_iia.metrics; "
        "print([m for m in sys.modules if m.split('.')[0] in ('transformers', 'timm', 'datasets') "
        "or m.startswith(('hf_iia.explainer', 'hf_iia.methods', 'hf_iia.adapters', 'hf_iia.tools'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_no_metric_module_imports_a_private_name_of_another():
    """The metric modules share hf_iia.metrics.inputs (public names), not each other's private helpers."""
    for path in sorted((REPO / "hf_iia" / "metrics").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("hf_iia")):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_an_audit_resumed_over_batch_files_with_another_column_order_reads_them_by_name(tmp_path):
    """The audit's columns follow the declarations' order, which changed once (the mask metrics): batch files
    written before the change hold their columns in another order and must still combine by name."""
    import pyarrow.parquet as pq

    config = AuditConfig(
        model=str(DEFAULT_MODELS_DIR / "resnet"), dataset="synthetic", n=4, batch_size=2, steps=1, perturbation_steps=2
    )
    first = run_audit(config, tmp_path / "audit", progress=False)
    batch = sorted((tmp_path / "audit" / "raw" / "batches").glob("batch-*.parquet"))[1]
    table = pq.read_table(batch)
    reordered = list(reversed(table.schema.names))
    pq.write_table(table.select(reordered), batch)
    for name in ("results.parquet", "results.json", "summary.json"):
        (tmp_path / "audit" / name).unlink()
    again = run_audit(config, tmp_path / "audit", progress=False)
    assert again["overall"] == first["overall"]
    assert pq.read_schema(batch).names == reordered  # the batch was read, not computed again
    rows = pq.read_table(tmp_path / "audit" / "results.parquet")
    assert rows.schema.names == table.schema.names and rows.num_rows == 8
