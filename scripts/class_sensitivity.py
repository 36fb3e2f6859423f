#!/usr/bin/env python
"""Class sensitivity and temperature of every method (issue 20, parts 5 and 6); prints markdown tables.

``--part real``: the real ImageNet EfficientNet-Lite0 (:func:`hf_iia.tools.demo.build_lite0_checkpoint`) on the
seven sample photos (:func:`hf_iia.tools.demo.sample_images`). For ``iia``, ``gradcam`` and ``ig``, each with
``contrast=None``, ``"mean"`` and ``"max"``: the Pearson correlation ``r`` of the map of the top-1 class and the map
of the lowest-probability class of each photo (mean and every value), and of the named pairs the issue quotes
(astronaut: top-1 vs "space shuttle"; coffee: "espresso" vs "cup"). ``r`` near 1: the map barely changes with the
class; the benchmark's class sensitivity is ``1 - r`` (:mod:`hf_iia.metrics.sensitivity`).

``--part temperature``: the synthetic benchmark checkpoints (``hf_iia/tools/bench/models/<arch>``), ``--n`` held-out
images each (the benchmark's own inputs and targets), every bench method that applies: the head's weight and bias
multiplied by ``c`` (so the logits are ``c z``: every decision and ranking unchanged; checked) for
``c = 0.5, 2, 10``, and the largest and the mean ``|change|`` of the normalised map (values in ``[0, 1]``) against
``c = 1``, over all pixels of all images.

``--part pairs``: the texture checkpoints (``hf_iia/tools/bench/models_textures/<arch>``) on ``--n`` held-out *pair*
images (:func:`hf_iia.tools.textures.make_pair_arrays`: two class objects of different classes, each with its mask;
indices from ``HELDOUT_START + 300``, past the bench's and the design search's held-out images). Of the two present
classes, the one the model scores higher is the *top* class, the other the *second* class. Every method that
applies explains both; per class: the pointing game against that class's object (the bench's tolerance) and the
share of the map's positive mass on the two objects that lies on that class's object
(:func:`hf_iia.metrics.object_energy_share`; 0.5 = the map does not tell the objects apart). Mean ± Student-t 95 %
half-width; for the second class, the paired difference to ``iia`` with ``*`` where its interval excludes 0.

``--part bench``: the benchmark's class-sensitivity column on the synthetic checkpoints (``--n`` images, every method
that applies: :func:`hf_iia.tools.bench.evaluate.evaluate_method`), mean ± Student-t 95 % half-width.

Examples::

    python scripts/class_sensitivity.py --part real --threads 2
    python scripts/class_sensitivity.py --part temperature --n 8 --threads 2
    python scripts/class_sensitivity.py --part bench --n 16 --archs resnet vit
    python scripts/class_sensitivity.py --part pairs --n 60 --archs vit deit resnet --threads 2
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from hf_iia import IIAExplainer
from hf_iia.metrics import map_correlation, object_energy_share, pointing_game
from hf_iia.tools.bench.evaluate import METHOD_SPECS, compute_maps, evaluate_method, pointing_tolerance
from hf_iia.tools.bench.inputs import synthetic_heldout, synthetic_inputs
from hf_iia.tools.bench.run import DEFAULT_MODELS_DIR, SYNTHETIC_ARCHS, TEXTURE_ARCHS, TEXTURES_MODELS_DIR
from hf_iia.tools.bench.stats import summarise

SCALES = (0.5, 2.0, 10.0)
REAL_METHODS = ("iia", "gradcam", "ig")
CONTRASTS = (None, "mean", "max")
PAIR_OFFSET = 300
"""Pair images start at the texture suite's ``HELDOUT_START + PAIR_OFFSET``: past every held-out index the bench
and the design search use, so no choice was made on them."""
NAMED_PAIRS = {"astronaut": (None, "space shuttle"), "coffee": ("espresso", "cup")}
"""Photo -> (first class, second class) by label name; ``None``: the photo's top-1 class."""


def _label(explainer: IIAExplainer, name: str) -> int:
    """The class whose label's first comma-separated name is ``name``."""
    (index,) = [i for i, label in explainer.id2label.items() if label.split(",")[0].strip() == name]
    return index


def real_part(methods: Sequence[str]) -> None:
    """The Lite0 table: correlation of two classes' maps per method and contrast."""
    from hf_iia.tools.demo import build_lite0_checkpoint, sample_images

    photos = sample_images()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = build_lite0_checkpoint(Path(folder) / "lite0")
        base = IIAExplainer(str(checkpoint), device="cpu", progress=False)
        pixel_values, _ = base.preprocess([image for _, image in photos])
        probabilities = base.class_scores(base.logits(pixel_values)).double()
        top1, lowest = probabilities.argmax(dim=1), probabilities.argmin(dim=1)
        names = [name for name, _ in photos]
        print(f"Lite0, {len(photos)} photos, {torch.get_num_threads()} threads. Top-1 / lowest-probability class:")
        for i, name in enumerate(names):
            print(
                f"- {name}: {base.id2label[int(top1[i])]!r} p={float(probabilities[i, top1[i]]):.3f} / "
                f"{base.id2label[int(lowest[i])]!r} p={float(probabilities[i, lowest[i]]):.2e}"
            )
        pairs = {}
        for photo, (first, second) in NAMED_PAIRS.items():
            i = names.index(photo)
            a = int(top1[i]) if first is None else _label(base, first)
            b = _label(base, second)
            pairs[photo] = (i, a, b)
            print(
                f"- pair {photo}: {base.id2label[a]!r} p={float(probabilities[i, a]):.4f} vs {base.id2label[b]!r} "
                f"p={float(probabilities[i, b]):.4f}"
            )
        print()
        header = "| method | contrast | mean r (top-1 vs lowest) | r per photo (" + ", ".join(names) + ") | "
        header += " | ".join(f"r {photo}" for photo in NAMED_PAIRS) + " |"
        print(header)
        print("|" + "|".join(["---"] * 2 + ["---:"] * (2 + len(NAMED_PAIRS))) + "|")
        for method in methods:
            for contrast in CONTRASTS:
                explainer = IIAExplainer(base.model, base.processor, method=method, contrast=contrast, progress=False)
                first_maps = explainer.attribute(pixel_values, top1)
                second_maps = explainer.attribute(pixel_values, lowest)
                r = map_correlation(first_maps, second_maps)
                cells = []
                for i, a, b in pairs.values():
                    maps = explainer.attribute(pixel_values[i : i + 1].repeat(2, 1, 1, 1), [a, b])
                    cells.append(f"{float(map_correlation(maps[:1], maps[1:])[0]):.3f}")
                per_photo = ", ".join(f"{value:.2f}" for value in r.tolist())
                print(
                    f"| `{method}` | {contrast} | {float(r.nanmean()):.3f} | {per_photo} | " + " | ".join(cells) + " |"
                )


def scaled_head(model: nn.Module, scale: float) -> nn.Module:
    """A copy of ``model`` whose classification head (every ``nn.Linear`` with ``config.num_labels`` outputs) has
    its weight and bias multiplied by ``scale``: the logits become ``scale * z``."""
    copied = copy.deepcopy(model)
    heads = [m for m in copied.modules() if isinstance(m, nn.Linear) and m.out_features == copied.config.num_labels]
    if not heads:
        raise SystemExit(f"no linear head with {copied.config.num_labels} outputs in {type(model).__name__}")
    with torch.no_grad():
        for head in heads:
            head.weight.mul_(scale)
            if head.bias is not None:
                head.bias.mul_(scale)
    return copied


def _methods(base: IIAExplainer, methods: Sequence[str] | None) -> list[str]:
    return [key for key in (methods or METHOD_SPECS) if METHOD_SPECS[key].applies_to(base.adapter)]


def temperature_part(archs: Sequence[str], n: int, methods: Sequence[str] | None, models_dir: Path) -> None:
    """The temperature table: max and mean |change| of the normalised maps under logit scaling."""
    columns = " | ".join(f"c={scale:g} max / mean" for scale in SCALES)
    print(f"Logit scaling (head weight and bias x c), {n} held-out images per model, {torch.get_num_threads()} threads")
    print()
    print(f"| model | method | {columns} |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * len(SCALES)) + "|")
    for arch in archs:
        folder = models_dir / arch
        base = IIAExplainer(str(folder), device="cpu", progress=False)
        inputs = synthetic_inputs(base, folder, n, 1, 64)
        reference_logits = base.logits(inputs.pixel_values)
        models = {scale: scaled_head(base.model, scale) for scale in SCALES}
        for scale, model in models.items():
            with torch.no_grad():
                logits = model(pixel_values=inputs.pixel_values).logits
            torch.testing.assert_close(logits, scale * reference_logits, rtol=1e-4, atol=1e-4)
        for key in _methods(base, methods):
            spec = METHOD_SPECS[key]
            reference, _ = compute_maps(spec.explainer(base.model, base.processor, None), inputs, 8)
            cells = []
            for model in models.values():
                maps, _ = compute_maps(spec.explainer(model, base.processor, None), inputs, 8)
                change = (maps - reference).abs()
                cells.append(f"{float(change.max()):.3f} / {float(change.mean()):.4f}")
            print(f"| {arch} | `{key}` | " + " | ".join(cells) + " |", flush=True)


def bench_part(archs: Sequence[str], n: int, methods: Sequence[str] | None, models_dir: Path) -> None:
    """The benchmark's class-sensitivity column on the synthetic checkpoints."""
    print(f"Class sensitivity 1 - r (target vs least likely other class), {n} held-out images per model")
    print()
    print("| model | method | class sensitivity ↑ | n defined |")
    print("|---|---|---:|---:|")
    for arch in archs:
        folder = models_dir / arch
        base = IIAExplainer(str(folder), device="cpu", progress=False)
        inputs = synthetic_inputs(base, folder, n, 1, 64)
        for key in _methods(base, methods):
            result = evaluate_method(METHOD_SPECS[key], base.model, base.processor, inputs, perturbation_steps=2)
            summary = summarise(result.per_image["class_sensitivity"])
            spread = f" ± {summary['half_width']:.3f}" if summary["half_width"] is not None else ""
            mean = "n/a" if summary["mean"] is None else f"{summary['mean']:.3f}{spread}"
            print(f"| {arch} | `{key}` | {mean} | {summary['n']} |", flush=True)


def _interval(values: Sequence[float | None]) -> str:
    """``mean ± half-width`` of ``values`` (None left out)."""
    summary = summarise(values)
    if summary["mean"] is None:
        return "n/a"
    spread = f"±{summary['half_width']:.3f}" if summary["half_width"] is not None else ""
    return f"{summary['mean']:.3f}{spread}"


def _paired(values: Sequence[float | None], reference: Sequence[float | None]) -> str:
    """The paired difference ``values - reference`` as ``Δ±`` with ``*`` where its 95 % interval excludes 0."""
    differences = [a - b for a, b in zip(values, reference, strict=True) if a is not None and b is not None]
    summary = summarise(differences)
    if summary["mean"] is None or summary["ci_low"] is None or summary["ci_high"] is None:
        return ""
    significant = "*" if summary["ci_low"] > 0 or summary["ci_high"] < 0 else ""
    return f" (Δ{summary['mean']:+.3f}{significant})"


def pairs_part(archs: Sequence[str], n: int, methods: Sequence[str] | None, models_dir: Path) -> None:
    """The pair table: pointing game and object energy share of the top and the second present class."""
    from hf_iia.tools.textures import make_pair_arrays

    print(f"Pair images of the texture suite, {n} per model, {torch.get_num_threads()} threads")
    for arch in archs:
        folder = models_dir / arch
        base = IIAExplainer(str(folder), device="cpu", progress=False)
        heldout = synthetic_heldout(folder, 0, None, "textures")
        images, masks, labels = make_pair_arrays(
            n, seed=heldout["seed"], size=heldout["size"], start=heldout["start"] + PAIR_OFFSET
        )
        pixel_values, _ = base.preprocess([Image.fromarray(image, "RGB") for image in images])
        if tuple(pixel_values.shape[2:]) != masks.shape[2:]:
            raise SystemExit(f"{arch}: the processor resizes {masks.shape[2:]} to {tuple(pixel_values.shape[2:])}")
        probabilities = base.class_scores(base.logits(pixel_values)).double()
        classes = torch.as_tensor(labels)
        order = probabilities.gather(1, classes).argsort(dim=1, descending=True)  # [n, 2]: top class first
        classes = classes.gather(1, order)
        object_masks = torch.as_tensor(masks)[torch.arange(n)[:, None], order]  # [n, 2, H, W] in the same order
        top2 = probabilities.topk(2, dim=1).indices.sort(dim=1).values
        both = (top2 == classes.sort(dim=1).values).all(dim=1).double().mean()
        present = probabilities.gather(1, classes)
        # The share a map scores when it is the same on both objects: the explained object's share of their area.
        area = object_masks.flatten(2).sum(dim=2).double()
        uniform = area / area.sum(dim=1, keepdim=True)
        print(
            f"\n{arch}: the two present classes are the model's top two on {float(both):.2f} of the images; mean p "
            f"top {float(present[:, 0].mean()):.3f}, second {float(present[:, 1].mean()):.3f}; a map uniform on "
            f"both objects has share {float(uniform[:, 1].mean()):.3f} (2nd), {float(uniform[:, 0].mean()):.3f} (top)\n"
        )
        print("| method | 2nd class PG | 2nd class share | top class PG | top class share | r(top, 2nd) |")
        print("|---|---|---|---|---|---:|")
        tolerance = pointing_tolerance(masks.shape[2:])
        reference: dict[str, list[float | None]] = {}
        for key in _methods(base, methods):
            explainer = METHOD_SPECS[key].explainer(base.model, base.processor, None)
            values: dict[str, list[float | None]] = {}
            maps = []
            for rank, name in enumerate(("top", "2nd")):
                rank_maps = torch.cat(
                    [
                        explainer.attribute(chunk, targets)
                        for chunk, targets in zip(pixel_values.split(8), classes[:, rank].split(8), strict=True)
                    ]
                )
                own, other = object_masks[:, rank], object_masks[:, 1 - rank]
                values[f"{name} pg"] = pointing_game(rank_maps, own, tolerance).double().tolist()
                share = object_energy_share(rank_maps, own, other)
                values[f"{name} share"] = [None if v != v else v for v in share.tolist()]
                maps.append(rank_maps)
            if not reference:
                reference = values
            cells = [
                _interval(values[column])
                + (_paired(values[column], reference[column]) if column.startswith("2nd") else "")
                for column in ("2nd pg", "2nd share", "top pg", "top share")
            ]
            r = map_correlation(maps[0], maps[1]).nanmean()
            print(f"| `{key}` | " + " | ".join(cells) + f" | {float(r):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("real", "temperature", "bench", "pairs"), required=True)
    parser.add_argument("--n", type=int, default=8, help="held-out images per synthetic model")
    parser.add_argument(
        "--archs",
        nargs="+",
        choices=SYNTHETIC_ARCHS,
        help=f"default {list(SYNTHETIC_ARCHS)}; pairs: {list(TEXTURE_ARCHS)}",
    )
    parser.add_argument(
        "--methods", nargs="+", help=f"method names (real: default {list(REAL_METHODS)}) or bench keys (default: all)"
    )
    parser.add_argument(
        "--models-dir", type=Path, help=f"checkpoints (default {DEFAULT_MODELS_DIR}; pairs: {TEXTURES_MODELS_DIR})"
    )
    parser.add_argument("--threads", type=int, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "real":
        real_part(args.methods or REAL_METHODS)
    elif args.part == "pairs":
        pairs_part(args.archs or TEXTURE_ARCHS, args.n, args.methods, args.models_dir or TEXTURES_MODELS_DIR)
    elif args.part == "temperature":
        temperature_part(args.archs or SYNTHETIC_ARCHS, args.n, args.methods, args.models_dir or DEFAULT_MODELS_DIR)
    else:
        bench_part(args.archs or SYNTHETIC_ARCHS, args.n, args.methods, args.models_dir or DEFAULT_MODELS_DIR)


if __name__ == "__main__":
    main()
