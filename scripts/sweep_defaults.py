#!/usr/bin/env python
"""Parameter sweeps that decide IIA's defaults (``hf_iia/presets.py``); prints markdown tables.

CNNs (``--suite real``: the real ImageNet EfficientNet-Lite0 on the cropped sample photos;
``--suite synthetic --arch resnet|convnext|swin|regnet``: a trained synthetic checkpoint on held-out
images with object masks), one factor at a time around the current default:

* ``integrand``: ``grad_relu_act`` vs ``relu_grad_act`` vs ``grad_act`` (default layer, default steps),
* ``steps``: 2, 5, 10 steps on every path, for the default layer and for the last two stages,
* ``layers``: last stage (default) vs last two stages (multi-layer IIA) vs the second-to-last stage alone
  (a finer map) vs the ``reference`` preset.

ViTs (``--suite synthetic --arch vit|deit``):

* ``steps``: 2, 5, 10 steps on both paths,
* ``block``: which block's attention is interpolated: the last, the last two (multi-layer IIA), the one
  before the last, the first; and the ``reference`` preset,
* ``integrand``: ``relu_grad_act`` (Gradient Rollout's term) vs ``grad_act`` (signed).

Both: ``rule``: the quadrature rule of every path (``endpoints``, ``riemann_right``, ``trapezoid``);
``baselines``: zero (the default: the mean colour, zero activations / attention) vs a black
image, and for ViTs uniform attention ``1 / T`` (see :func:`baseline_configs`).

Every configuration is scored with the benchmark's own code (:mod:`hf_iia.tools.bench.run`):
deletion / insertion AUC (and, on synthetic data, pointing game, energy pointing game and
mask AP), mean ± Student-t 95 % half-width, and seconds per map. Identical maps are scored
once. The CNN tables also report the largest difference between the nested integral at the
last stage and the ``reference`` preset with the same integrand (``grad_relu_act``): when the
explained layer feeds pooling + a linear head, the inner path only rescales the map, so the
two coincide.

Sweeps use a small ``--n`` to stay within a few minutes on a 2-core CPU (the benchmark itself
uses all inputs); say which ``--n`` a table used when quoting it.

Examples::

    python scripts/sweep_defaults.py --suite real --n 7 --threads 1
    python scripts/sweep_defaults.py --suite synthetic --arch resnet --n 60
    python scripts/sweep_defaults.py --suite synthetic --arch vit --n 60 --sweeps steps block
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hf_iia import IIAExplainer
from hf_iia.adapters.vit import ViTAdapter
from hf_iia.tools.bench.evaluate import LAST_TWO, MethodSpec, compute_maps, describe, score_maps
from hf_iia.tools.bench.inputs import BenchInputs, real_inputs, synthetic_inputs
from hf_iia.tools.bench.report import METRICS, TIE_TOLERANCE
from hf_iia.tools.bench.run import DEFAULT_MODELS_DIR
from hf_iia.tools.bench.stats import summarise

CNN_SWEEPS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "integrand": [
        ("grad_relu_act", {"integrand": "grad_relu_act"}),
        ("relu_grad_act", {"integrand": "relu_grad_act"}),
        ("grad_act", {"integrand": "grad_act"}),
    ],
    "steps": [
        ("last stage, 10 steps", {"steps": 10}),
        ("last stage, 5 steps", {"steps": 5}),
        ("last stage, 2 steps", {"steps": 2}),
        ("last two, 10 steps", {"layer": LAST_TWO, "steps": 10}),
        ("last two, 5 steps", {"layer": LAST_TWO, "steps": 5}),
        ("last two, 2 steps", {"layer": LAST_TWO, "steps": 2}),
    ],
    "layers": [
        ("last stage (default)", {}),
        ("last stage, reference's integrand", {"integrand": "grad_relu_act"}),
        ("last two stages", {"layer": LAST_TWO}),
        ("second-to-last stage alone", {"layer": -2}),
        ("reference preset", {"preset": "reference"}),
    ],
}
VIT_SWEEPS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "steps": [("5 steps", {"steps": 5}), ("2 steps", {"steps": 2}), ("10 steps", {"steps": 10})],
    "block": [
        ("last block", {"layer": -1}),
        ("last two blocks", {"layer": LAST_TWO}),
        ("second-to-last block", {"layer": -2}),
        ("first block", {"layer": 0}),
        ("reference preset", {"preset": "reference"}),
    ],
    "integrand": [("relu_grad_act", {"integrand": "relu_grad_act"}), ("grad_act", {"integrand": "grad_act"})],
}
RULE_SWEEP: list[tuple[str, dict[str, Any]]] = [
    ("endpoints", {"rule": "endpoints"}),
    ("riemann_right", {"rule": "riemann_right"}),
    ("trapezoid", {"rule": "trapezoid"}),
]


def baseline_configs(base: IIAExplainer, inputs: BenchInputs) -> list[tuple[str, dict[str, Any]]]:
    """The ``baselines`` sweep for ``base``'s model: constant baselines other than zero, per path.

    Image path: black (the processor's output for a black image, averaged over channels) instead of the
    mean colour (0). Level path: for ViTs, uniform attention ``1 / T`` (``T`` tokens, so every
    interpolated row still sums to one) instead of zero attention; CNN activations keep 0.
    """
    height, width = inputs.pixel_values.shape[2:]
    black_image = Image.new("RGB", (width, height))
    black = float(base.processor(images=black_image, return_tensors="pt")["pixel_values"].mean())
    configs = [("zero (default)", {}), (f"image {black:+.2f} (black)", {"baselines": (black, 0.0)})]
    if isinstance(base.adapter, ViTAdapter):
        rows, columns = base.adapter.patch_grid((height, width))
        tokens = rows * columns + base.adapter.special_tokens
        configs.append((f"attention 1/{tokens} (uniform)", {"baselines": (0.0, 1.0 / tokens)}))
    return configs


def sweep(
    base: IIAExplainer, inputs: BenchInputs, configs: list[tuple[str, dict[str, Any]]], cache: dict, args
) -> list[dict[str, Any]]:
    """Score every configuration; ``cache`` maps a hash of the maps to their metric values."""
    rows = []
    for label, options in configs:
        spec = MethodSpec(label, "iia", tuple(options.items()))
        explainer = spec.explainer(base.model, base.processor, args.internal_batch_size)
        maps, seconds = compute_maps(explainer, inputs, args.batch_size)
        key = hashlib.sha256(maps.numpy().tobytes()).hexdigest()
        if key not in cache:
            cache[key] = score_maps(
                base, inputs, maps, perturbation_steps=args.perturbation_steps, metric_batch_size=args.metric_batch_size
            )
        rows.append(
            {
                "config": label,
                "options": {k: str(v) for k, v in options.items()},
                "explainer": describe(explainer),
                "seconds_per_map": seconds / len(inputs.ids),
                "per_image": cache[key],
                "maps": maps,
                "summary": {m: summarise(v) for m, v in cache[key].items()},
            }
        )
        print(f"  [{label}] {seconds / len(inputs.ids):.2f} s/map", file=sys.stderr, flush=True)
    return rows


def table(title: str, rows: list[dict[str, Any]]) -> str:
    """A markdown table of one sweep: mean ± t-95 % half-width, best mean per column in bold, and the paired
    difference to the first row (``Δ``; ``*`` when its 95 % interval excludes 0)."""
    metrics = [m for m in METRICS if m in rows[0]["summary"]]
    best = {}
    for m in metrics:
        means = [r["summary"][m]["mean"] for r in rows]
        best[m] = max(means) if METRICS[m][1] else min(means)
    header = ["config", "steps", "points / image"] + [
        f"{METRICS[m][0]} {'↑' if METRICS[m][1] else '↓'}" for m in metrics
    ]
    lines = [
        f"### {title}",
        "",
        "| " + " | ".join(header + ["s / map"]) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(metrics) + 1)) + "|",
    ]
    first = rows[0]
    for r in rows:
        cells = [r["config"], "×".join(map(str, r["explainer"]["steps"])), str(r["explainer"]["points_per_image"])]
        for m in metrics:
            s = r["summary"][m]
            text = f"{s['mean']:.3f} ± {s['half_width']:.3f}" if s["half_width"] is not None else f"{s['mean']:.3f}"
            text = f"**{text}**" if abs(s["mean"] - best[m]) <= TIE_TOLERANCE else text
            if r is not first:
                diff = summarise([a - b for a, b in zip(r["per_image"][m], first["per_image"][m], strict=True)])
                significant = diff["half_width"] is not None and (diff["ci_low"] > 0 or diff["ci_high"] < 0)
                text += f" (Δ {diff['mean']:+.3f}{'*' if significant else ''})"
            cells.append(text)
        cells.append(f"{r['seconds_per_map']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=["real", "synthetic"])
    parser.add_argument(
        "--arch", default="resnet", help="synthetic checkpoint: vit, deit, resnet, convnext, swin, regnet"
    )
    parser.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR), help="folder of synthetic <arch>/ checkpoints")
    parser.add_argument(
        "--checkpoint", help="real suite: an existing Lite0 checkpoint folder (default: build one in a temp dir)"
    )
    parser.add_argument("--n", type=int, help="inputs (default: 7 real = the full photos; 60 synthetic)")
    parser.add_argument("--sweeps", nargs="+", help="which sweeps (default: all for the family)")
    parser.add_argument("--perturbation-steps", type=int, default=20, help="deletion/insertion steps (default: 20)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--metric-batch-size", type=int, default=64)
    parser.add_argument("--internal-batch-size", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the rows (per-image values) to this JSON file")
    parser.add_argument("--render", help="only print the tables of a JSON file written by --json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        for sweep_name, rows in saved["sweeps"].items():
            print(table(f"{sweep_name} ({saved['name']}, n = {saved['n']})", rows))
        return
    if args.suite is None:
        parser.error("--suite is required (unless --render)")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    if args.suite == "real":
        from hf_iia.tools.demo import build_lite0_checkpoint

        folder = (
            Path(args.checkpoint)
            if args.checkpoint
            else build_lite0_checkpoint(Path(tempfile.mkdtemp(prefix="hf_iia_sweep_")) / "efficientnet_lite0")
        )
        name = "efficientnet_lite0 (real photos)"
    else:
        folder = Path(args.models_dir) / args.arch
        name = f"synthetic {args.arch}"
    base = IIAExplainer(str(folder), device=args.device, progress=False)
    family = base.family.name
    n = args.n or (7 if args.suite == "real" else 60)
    if args.suite == "real":
        inputs = real_inputs(base, n, 0, args.metric_batch_size)
    else:
        inputs = synthetic_inputs(base, folder, n, 0, args.metric_batch_size)
    sweeps = {
        **(CNN_SWEEPS if family == "cnn" else VIT_SWEEPS),
        "baselines": baseline_configs(base, inputs),
        "rule": RULE_SWEEP,
    }
    chosen = args.sweeps or list(sweeps)
    print(
        f"## {name}: {family}, n = {n}, DEL/INS {args.perturbation_steps} steps, {args.threads} thread(s), "
        f"device {args.device}\n",
        flush=True,
    )
    cache: dict = {}
    results = {}
    for sweep_name in chosen:
        rows = sweep(base, inputs, sweeps[sweep_name], cache, args)
        results[sweep_name] = rows
        print(table(f"{sweep_name} ({name}, n = {n})", rows), flush=True)
        if family == "cnn" and sweep_name == "layers":
            same = next(r for r in rows if r["config"] == "last stage, reference's integrand")
            reference = next(r for r in rows if r["config"].startswith("reference"))
            difference = (same["maps"] - reference["maps"]).abs().max().item()
            print(
                "nested integral (default steps, last stage) vs reference preset, same integrand: largest |map "
                f"difference| = {difference:.2g} ({'identical maps' if difference < 1e-4 else 'different maps'})\n",
                flush=True,
            )
    print(f"wall time {time.perf_counter() - started:.0f} s", flush=True)
    if args.json:
        for rows in results.values():
            for r in rows:
                r.pop("maps")
        Path(args.json).write_text(json.dumps({"name": name, "n": n, "ids": inputs.ids, "sweeps": results}, indent=1))


if __name__ == "__main__":
    main()
