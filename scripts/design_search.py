"""Choose IIA's design by data: candidates scored on a development split, the choice confirmed on a report split.

    python scripts/design_search.py --split dev --out search/dev                      # every candidate
    python scripts/design_search.py --split report --configs iia iia3-product --protocol paper --out search/report
    python scripts/design_search.py --split dev --models vit deit textures-vit textures-deit --no-information \
        --perturbation-steps 20 --threads 1 --out search/vit-dev                          # the ViT search

Models: the real ImageNet EfficientNet-Lite0 and Lite1 (:func:`hf_iia.tools.demo.build_lite_checkpoint`), the
synthetic checkpoints of ``hf_iia/tools/bench/models`` and the real-texture ones of
``hf_iia/tools/bench/models_textures`` (named ``textures-<arch>``), chosen with ``--models``. Splits never share an
image:

* real: 13 offline photos (the demo's 7 and :data:`hf_iia.tools.demo.EXTRA_PHOTOS`), each in the bench's five
  crops; the development split holds the crops of :data:`DEV_PHOTOS`, the report split those of the others
  (a photo's crops stay together, so the report split shows no photo the choice was made on);
* synthetic: held-out images, the first ``--n`` for development, the next ``--n`` for the report.

Candidates (:data:`FEATURE_MAP_CANDIDATES`, :data:`ATTENTION_CANDIDATES`) are named options: the level(s) the map
is formed at, how several levels are fused (``combine=``, ``fusion=``), the image path's start (``start=``), the
integrand, the steps and the explained score (``contrast=``); the comparison methods run in the same call. Some
maps the script finishes itself (:func:`finished`): at the token grid's resolution (:data:`ON_TOKEN_GRID`), times
Attention Rollout's (:data:`TIMES_ROLLOUT`), with more contrast (:data:`POWER`). Each row prints the mean and the
paired difference to ``--reference`` (default Grad-CAM, else GAE), ``*`` where its 95 % interval excludes 0.
Targets: top-1 class (real), the ground-truth label (synthetic). Each method also explains every image's least
likely class, for the class sensitivity (``CS``, 1 - the correlation of the two maps; ``--no-class-sensitivity``
leaves it out). ``--out`` receives ``results.json`` with every per-image value; ``--tables-from results.json
[--reference LABEL]`` prints its tables again:

    python scripts/design_search.py --tables-from search/vit-report/results.json --reference iia-blur-gae
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hf_iia import IIAExplainer
from hf_iia.adapters import Adapter, AttentionAdapter
from hf_iia.adapters.vit import ViTAdapter
from hf_iia.maps import normalise, upsample
from hf_iia.methods import methods_for
from hf_iia.tools.bench.evaluate import compute_maps, paired_difference, score_maps
from hf_iia.tools.bench.inputs import BenchInputs, real_inputs, subset, synthetic_inputs
from hf_iia.tools.bench.run import DEFAULT_MODELS_DIR, TEXTURES_MODELS_DIR
from hf_iia.tools.bench.stats import summarise
from hf_iia.tools.demo import build_lite_checkpoint, extra_images, sample_images

DEV_PHOTOS = ("chelsea", "astronaut", "grace_hopper", "flower", "stereo_motorcycle", "clock")
"""The photos of the development split; the other seven are the report split."""

Candidate = tuple[str, str, dict[str, Any]]  # (label, method, options)

ON_TOKEN_GRID = "on_token_grid"
"""A candidate option the script applies, not the explainer: the method's pixel-level map averaged over each patch
and resampled to the input as the token-grid maps are (:func:`on_token_grid`). It separates what a map says from
the resolution it says it at: deletion and insertion reward pixel-precise maps."""

TIMES_ROLLOUT = "times_rollout"
"""A candidate option the script applies, not the explainer: the method's map multiplied by the same image's
Attention Rollout map raised to this power, then normalised (:func:`finished`). It asks whether the
class-agnostic attention flow, the best mask AP on the clean shapes, adds to IIA what its own rollout lacks."""
POWER = "power"
"""A candidate option the script applies, not the explainer: the method's map raised to this power and normalised.
The pixels' order is unchanged, so are mask AP, deletion and insertion; only the contrast grows. Energy pointing
game, a share of the map's energy, is not invariant to it: these rows show how much of it is contrast alone."""
SCRIPT_OPTIONS = frozenset({ON_TOKEN_GRID, TIMES_ROLLOUT, POWER})

FEATURE_MAP_CANDIDATES: list[Candidate] = [
    ("iia", "iia", {}),
    ("iia-last-stage", "iia", {"layer": -1, "steps": 10}),  # the default before this search
    ("iia-stage-2", "iia", {"layer": -2}),
    ("iia-stage-3", "iia", {"layer": -3}),
    ("iia-stage-4", "iia", {"layer": -4}),
    ("iia3", "iia", {"preset": "iia3"}),
    ("iia3-earliest", "iia", {"preset": "iia3", "combine": "earliest"}),
    ("iia3-product", "iia", {"preset": "iia3", "combine": "product"}),
    ("iia3-sum", "iia", {"preset": "iia3", "combine": "sum"}),
    ("iia[-3,-1]-product", "iia", {"layer": [-3, -1], "steps": 5, "combine": "product"}),
    ("iia[-3,-1]-earliest", "iia", {"layer": [-3, -1], "steps": 5, "combine": "earliest"}),
    ("iia[-4,-1]-product", "iia", {"layer": [-4, -1], "steps": 5, "combine": "product"}),
    ("iia-black", "iia", {"start": "black"}),
    ("iia-blur", "iia", {"start": "blur"}),
    ("iia-stage-3-black", "iia", {"layer": -3, "start": "black"}),
    ("iia-stage-3-blur", "iia", {"layer": -3, "start": "blur"}),
    ("iia-stage-3-5steps", "iia", {"layer": -3, "steps": 5}),
    ("iia-stage-3-black-5steps", "iia", {"layer": -3, "start": "black", "steps": 5}),
    ("iia-stage-4-5steps", "iia", {"layer": -4, "steps": 5}),
    ("iia-stage-4-black-5steps", "iia", {"layer": -4, "start": "black", "steps": 5}),
    ("gradcam", "gradcam", {}),
    ("gradcam++", "gradcam++", {}),
    ("layercam", "layercam", {}),
    ("gradcam-stage-3", "gradcam", {"layer": -3}),
    ("gradcam++-stage-3", "gradcam++", {"layer": -3}),
    ("layercam-stage-3", "layercam", {"layer": -3}),
    ("ig", "ig", {}),
]
ATTENTION_CANDIDATES: list[Candidate] = [
    ("iia", "iia", {}),  # the default preset
    # the default before this search: the last block's attention and the image, 5 x 5 points, Gradient Rollout
    ("iia-before-search", "iia", {"start": "mean", "fusion": "gradient_rollout"}),
    ("iia-block-2", "iia", {"layer": -2}),
    ("iia-block-0", "iia", {"layer": 0}),
    ("iia-last-two", "iia", {"layer": [-2, -1], "steps": [4, 3, 3]}),
    ("iia-every-block", "iia", {"layer": [0, 1, 2, 3], "steps": [3, 2, 2, 2, 2]}),
    ("iia-image-path-only", "iia", {"steps": [5, 0]}),
    ("iia-attention-path-only", "iia", {"steps": [0, 5]}),
    ("iia-3x3", "iia", {"steps": 3}),
    ("iia-signed", "iia", {"integrand": "grad_act"}),
    ("iia-black", "iia", {"start": "black"}),
    ("iia-blur", "iia", {"start": "blur"}),
    ("iia-log-probability", "iia", {"contrast": "log_softmax"}),
    ("iia-normalised", "iia", {"fusion": "normalised_gradient_rollout"}),
    ("iia-globally-normalised", "iia", {"fusion": "globally_normalised_gradient_rollout"}),
    ("iia-gae", "iia", {"fusion": "gae"}),
    ("iia-globally-normalised-gae", "iia", {"fusion": "globally_normalised_gae"}),
    # second round, around the first round's best (the blurred start)
    ("iia-blur-every-block", "iia", {"start": "blur", "layer": [0, 1, 2, 3], "steps": [3, 2, 2, 2, 2]}),
    ("iia-blur-last-two", "iia", {"start": "blur", "layer": [-2, -1], "steps": [4, 3, 3]}),
    ("iia-blur-block-0", "iia", {"start": "blur", "layer": 0}),
    ("iia-blur-gae", "iia", {"start": "blur", "fusion": "gae"}),
    ("iia-blur-10x5", "iia", {"start": "blur", "steps": [10, 5]}),
    ("iia-blur-3x3", "iia", {"start": "blur", "steps": 3}),
    ("iia-blur-image-path-only", "iia", {"start": "blur", "steps": [5, 0]}),
    ("attention_rollout", "attention_rollout", {}),
    ("gradient_rollout", "gradient_rollout", {}),
    ("gae", "gae", {}),
    ("attnlrp", "attnlrp", {}),
    ("legrad", "legrad", {}),
    ("gradcam", "gradcam", {}),  # on the token grid entering the last block
    ("gradcam-block-2", "gradcam", {"layer": -2}),
    ("gradcam++", "gradcam++", {}),
    ("layercam", "layercam", {}),
    ("scorecam", "scorecam", {}),
    ("ig", "ig", {}),
    ("attnlrp-token-grid", "attnlrp", {ON_TOKEN_GRID: True}),
    ("ig-token-grid", "ig", {ON_TOKEN_GRID: True}),
    # the default's map times Attention Rollout's, the attention flow weighing more as the power grows
    ("iia-x-rollout^0.25", "iia", {TIMES_ROLLOUT: 0.25}),
    ("iia-x-rollout^0.5", "iia", {TIMES_ROLLOUT: 0.5}),
    ("iia-x-rollout", "iia", {TIMES_ROLLOUT: 1.0}),
    ("iia-x-rollout^2", "iia", {TIMES_ROLLOUT: 2.0}),
    # the same maps with more contrast: what energy pointing game rewards besides the pixels' order
    ("iia^2", "iia", {POWER: 2.0}),
    ("attention_rollout^2", "attention_rollout", {POWER: 2.0}),
    ("gae^2", "gae", {POWER: 2.0}),
]
"""Block indices are those of the 4-block synthetic ViT / DeiT: ``-2`` is a middle block, ``0`` the first."""
REAL = ("efficientnet_lite0", "efficientnet_lite1")


def candidates_for(explainer: IIAExplainer, labels: list[str] | None) -> list[Candidate]:
    table = ATTENTION_CANDIDATES if isinstance(explainer.adapter, AttentionAdapter) else FEATURE_MAP_CANDIDATES
    table = [c for c in table if c[1] in methods_for(explainer.adapter)]  # e.g. AttnLRP only where its rules apply
    if labels is None:
        return table
    known = {candidate[0]: candidate for candidate in table}
    return [known[label] for label in labels if label in known]


def on_token_grid(maps: torch.Tensor, adapter: ViTAdapter) -> torch.Tensor:
    """``[N, H, W]`` pixel-level maps averaged over each patch of ``adapter``'s model (``[N, H / p, W / p]``) and
    finished as the explainer finishes that model's token-grid maps: resampled with its upsampling mode back to
    ``[N, H, W]`` and normalised (:func:`hf_iia.maps.normalise`)."""
    cells = F.avg_pool2d(maps.unsqueeze(1), adapter.patch_size).squeeze(1)
    return normalise(upsample(cells, (maps.shape[-2], maps.shape[-1]), adapter.upsample_mode))


def finished(
    maps: torch.Tensor, options: dict[str, Any], adapter: Adapter, rollout: torch.Tensor | None
) -> torch.Tensor:
    """``[N, H, W]`` maps with the candidate's :data:`SCRIPT_OPTIONS` applied, in this order: pooled to the token
    grid of ``adapter`` (the model's own, :data:`ON_TOKEN_GRID`), multiplied by ``rollout`` (Attention Rollout's
    ``[N, H, W]`` maps of the same images, in ``[0, 1]``) to the power :data:`TIMES_ROLLOUT`, raised to
    :data:`POWER`; each step normalises (:func:`hf_iia.maps.normalise`). Attention Rollout reads no class, so the
    second class's maps meet the same ``rollout``."""
    if options.get(ON_TOKEN_GRID):
        assert isinstance(adapter, ViTAdapter), "token-grid candidates are attention candidates"
        maps = on_token_grid(maps, adapter)
    if TIMES_ROLLOUT in options:
        assert rollout is not None, "the caller computes Attention Rollout's maps for a TIMES_ROLLOUT candidate"
        maps = normalise(maps * rollout ** options[TIMES_ROLLOUT])
    if POWER in options:
        maps = normalise(maps ** options[POWER])
    return maps


def model_inputs(name: str, split: str, n: int, work: Path) -> tuple[IIAExplainer, BenchInputs]:
    """The explainer of model ``name`` and its ``split`` inputs: a real Lite, a synthetic checkpoint (``"vit"``) or a
    real-texture one (``"textures-vit"``)."""
    if name in REAL:
        base = IIAExplainer(str(build_lite_checkpoint(work / name, name)), device="cpu", progress=False)
        photos = sample_images() + extra_images()
        inputs = real_inputs(base, None, 0, 32, photos=photos)
        wanted = [
            i for i, ident in enumerate(inputs.ids) if (ident.rsplit("-", 1)[0] in DEV_PHOTOS) == (split == "dev")
        ]
        return base, subset(inputs, wanted)
    suite, arch = name.split("-", 1) if name.startswith("textures-") else ("synthetic", name)
    folder = (TEXTURES_MODELS_DIR if suite == "textures" else DEFAULT_MODELS_DIR) / arch
    base = IIAExplainer(str(folder), device="cpu", progress=False)
    inputs = synthetic_inputs(base, folder, 2 * n, 0, 64, suite=suite)
    return base, subset(inputs, range(n) if split == "dev" else range(n, 2 * n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=["dev", "report"])
    parser.add_argument(
        "--reference", help="the row the paired differences are taken against (default: gradcam, else gae)"
    )
    parser.add_argument(
        "--tables-from", metavar="RESULTS_JSON", help="print the tables of an earlier run's results.json and stop"
    )
    parser.add_argument("--models", nargs="+", default=[*REAL, "resnet", "convnext"])
    parser.add_argument("--configs", nargs="+", help="candidate labels to run (default: every candidate)")
    parser.add_argument("--n", type=int, default=60, help="synthetic images per split (default 60)")
    parser.add_argument("--protocol", choices=["rise", "paper"], default="rise")
    parser.add_argument("--perturbation-steps", type=int, default=20)
    parser.add_argument("--no-information", action="store_true", help="leave out SIC / AIC (the slowest metrics)")
    parser.add_argument(
        "--no-class-sensitivity",
        action="store_true",
        help="do not explain each image's least likely class too (that doubles the maps' cost)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.tables_from:
        earlier = json.loads(Path(args.tables_from).read_text())
        for name, model in earlier["models"].items():
            print(table(name, model["n"], model["rows"], args.reference))
        return
    if args.split is None or args.out is None:
        parser.error("--split and --out are required (unless --tables-from is given)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hf_iia_search_"))
    results: dict[str, Any] = {"settings": vars(args), "models": {}}
    started = time.perf_counter()
    for name in args.models:
        base, inputs = model_inputs(name, args.split, args.n, work)
        rows: dict[str, Any] = {}
        rollout: torch.Tensor | None = None  # Attention Rollout's maps, computed once for every TIMES_ROLLOUT row
        for label, method, options in tqdm(candidates_for(base, args.configs), desc=name, unit="config"):
            settings = {key: value for key, value in options.items() if key not in SCRIPT_OPTIONS}
            explainer = IIAExplainer(base.model, base.processor, method=method, progress=False, **settings)
            maps, seconds = compute_maps(explainer, inputs, 8)
            other_maps = None
            if inputs.second_targets is not None and not args.no_class_sensitivity:
                other_maps, _ = compute_maps(explainer, replace(inputs, targets=inputs.second_targets), 8)
            if TIMES_ROLLOUT in options and rollout is None:
                flow = IIAExplainer(base.model, base.processor, method="attention_rollout", progress=False)
                rollout, _ = compute_maps(flow, inputs, 8)
            # base.adapter is the model's own attention adapter: IG's is input-space
            maps = finished(maps, options, base.adapter, rollout)
            other_maps = None if other_maps is None else finished(other_maps, options, base.adapter, rollout)
            values = score_maps(
                explainer,
                inputs,
                maps,
                perturbation_steps=args.perturbation_steps,
                metric_batch_size=64,
                protocol=args.protocol,
                information=not args.no_information,
                other_maps=other_maps,
            )
            rows[label] = {"method": method, "options": options, "seconds_per_map": seconds / len(inputs.ids), **values}
        results["models"][name] = {"n": len(inputs.ids), "ids": inputs.ids, "rows": rows}
        print(table(name, len(inputs.ids), rows, args.reference), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wall time {time.perf_counter() - started:.0f} s")


METRICS = {
    "deletion_auc": "DEL ↓",
    "insertion_auc": "INS ↑",
    "pos_auc": "POS ↓",
    "neg_auc": "NEG ↑",
    "adp": "ADP ↓",
    "pic": "PIC ↑",
    "sic": "SIC ↑",
    "aic": "AIC ↑",
    "energy_pointing_game": "EPG ↑",
    "mask_ap": "mask AP ↑",
    "class_sensitivity": "CS ↑",
}


def table(name: str, n: int, rows: dict[str, Any], reference: str | None = None) -> str:
    """Markdown: the mean per metric and the paired difference to the row ``reference`` (default: Grad-CAM, else
    GAE, when they ran)."""
    if reference is None:
        reference = "gradcam" if "gradcam" in rows else ("gae" if "gae" in rows else None)
    elif reference not in rows:
        raise SystemExit(f"--reference {reference!r} is not a row of {name}: {list(rows)}")
    metrics = [m for m in METRICS if m in next(iter(rows.values()))]
    head = "| config | " + " | ".join(METRICS[m] for m in metrics) + " | s / map |"
    lines = [f"\n### {name} (n = {n}; Δ vs {reference})\n", head, "|---" * (len(metrics) + 2) + "|"]
    for label, row in rows.items():
        cells = []
        for metric in metrics:
            summary = summarise(row[metric])
            cell = f"{summary['mean']:.3f}" if summary["mean"] is not None else "–"
            if reference and label != reference:
                diff = paired_difference(row[metric], rows[reference][metric])
                if diff["mean"] is not None and diff["ci_low"] is not None:
                    star = "*" if diff["ci_low"] > 0 or diff["ci_high"] < 0 else ""
                    cell += f" ({diff['mean']:+.3f}{star})"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {row['seconds_per_map']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
