"""The benchmark that shows where IIA stands: faithfulness, localisation and cost of every method.

Two suites (``hf-iia bench --suite synthetic|real --out DIR``), both offline:

* ``synthetic``: every trained tiny checkpoint under ``hf_iia/tools/bench/models/<arch>/``
  (``vit``, ``deit``, ``resnet``, ``convnext``; see ``scripts/train_synthetic.py``) on
  ``n`` held-out images of :mod:`hf_iia.tools.synthetic`: the indices, data seed and image
  size come from the checkpoint's ``train_log.json`` (``heldout_indices``), else from the
  training script's convention (indices from :data:`hf_iia.tools.synthetic.HELDOUT_START`, seed 0, the
  processor's size), so they never overlap the training indices ``[0, train_size)``.
  Target: the ground-truth label (the class whose object mask is the evidence).
  Metrics: pointing game, energy pointing game and mask average precision against the
  object mask, deletion and insertion AUC, seconds per map.
* ``real``: the real ImageNet EfficientNet-Lite0 (:func:`hf_iia.tools.demo.build_lite0_checkpoint`)
  on the photos of :func:`hf_iia.tools.demo.sample_images`, each in :data:`CROPS` (the full photo
  and four 80 % crops anchored at the corners, fixed boxes): 7 photos x 5 crops = 35 inputs,
  ordered crop-major (all full photos first), so ``--n 7`` takes the seven full photos.
  Target: the model's top-1 class on each input. Metrics: deletion and insertion AUC,
  seconds per map.

Methods (:data:`METHOD_SPECS`; each family runs those that apply to it):

=====================  ======  =================================================================
key                    family  explainer
=====================  ======  =================================================================
``iia``                both    ``IIAExplainer(method="iia")`` (the ``default`` preset)
``iia-reference``      both    ``preset="reference"`` (what the authors' code computes)
``iia-multilayer``     both    ``layer=`` the last two taps (stages or blocks) of the adapter (multi-layer IIA)
``ig``                 both    Integrated Gradients, 50 steps, zero baseline
``gradcam``            cnn     Grad-CAM at the default layer
``gradcam++``          cnn     Grad-CAM++ at the default layer
``attention_rollout``  vit     Attention Rollout
``gradient_rollout``   vit     Gradient Rollout (IIA's ViT integrand at the input only)
``gae``                vit     Chefer et al. 2021
=====================  ======  =================================================================

Metric settings: the pointing game counts a hit when the map's maximum lies within 15 px of the
object at 224 px input (Zhang et al.), scaled to the input size (4 px at 64 px); deletion replaces pixels by 0 in normalised input space (the dataset mean
colour), insertion starts from a Gaussian blur (kernel 11, sigma 5); both use
``perturbation_steps`` steps and the softmax probability of the target
(:mod:`hf_iia.metrics`). Maps are computed with batched ``attribute`` calls of
``batch_size`` images; seconds per map = wall time of those calls / number of images.

Spread: mean ± the half-width of a Student-t 95 % confidence interval over the per-image
values (:mod:`hf_iia.tools.bench.stats`; closed form, no resampling). On the real suite the five
crops of a photo are not independent, so that interval is optimistic.

Outputs in ``DIR`` (nothing elsewhere; the real suite also writes the Lite0 checkpoint
folder ``DIR/efficientnet_lite0`` once, unless ``checkpoint=`` is given): ``results.md``
(tables), ``results.json`` (settings, machine, per-image values and summaries, so every
number can be recomputed) and ``maps.png`` (a few inputs x methods).
"""

from __future__ import annotations

import io
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...adapters import Adapter, adapter_for
from ...adapters.base import extract_logits
from ...errors import IIAError
from ...explainer import IIAExplainer
from ...methods import METHODS
from ...metrics import deletion_auc, energy_pointing_game, insertion_auc, mask_average_precision, pointing_game
from ...outputs import output_path, write_atomic
from .stats import CONFIDENCE, summarise

SUITES = ("synthetic", "real")
SYNTHETIC_ARCHS = ("vit", "deit", "resnet", "convnext")
"""First held-out index of ``scripts/train_synthetic.py`` (training uses ``[0, train_size)``)."""
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent / "models"
CROPS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("full", (0.0, 0.0, 1.0, 1.0)),
    ("tl", (0.0, 0.0, 0.8, 0.8)),
    ("tr", (0.2, 0.0, 1.0, 0.8)),
    ("bl", (0.0, 0.2, 0.8, 1.0)),
    ("br", (0.2, 0.2, 1.0, 1.0)),
)
"""``(name, (left, top, right, bottom))`` crop boxes as fractions of the photo's width and height."""

METRICS: dict[str, tuple[str, bool]] = {
    "pointing_game": ("pointing game", True),
    "energy_pointing_game": ("energy PG", True),
    "mask_ap": ("mask AP", True),
    "deletion_auc": ("DEL", False),
    "insertion_auc": ("INS", True),
}
"""Metric key -> (column title, higher is better)."""

POINTING_TOLERANCE_AT_224 = 15
"""Pointing-game hit radius (pixels at 224 px input; scaled with the input size: 4 px at 64 px)."""

TIE_TOLERANCE = 1e-6
"""Means closer than this count as tied (float noise, e.g. ``iia`` vs ``iia-reference`` on a linear head)."""

LAST_TWO = "@last-two"
"""A ``layer`` option value resolved per model to the adapter's last two taps (multi-layer IIA)."""


@dataclass(frozen=True)
class MethodSpec:
    """One benchmark column: an explainer method and its options (``layer`` may be :data:`LAST_TWO`)."""

    key: str
    method: str
    options: tuple[tuple[str, Any], ...] = ()

    def explainer(self, model: torch.nn.Module, processor: object, internal_batch_size: int | None) -> IIAExplainer:
        """An explainer of this method sharing ``model`` (no copy)."""
        options = dict(self.options)
        if options.get("layer") == LAST_TWO:
            options["layer"] = list(adapter_for(model).taps[-2:])
        return IIAExplainer(model, processor, method=self.method, internal_batch_size=internal_batch_size,
                            progress=False, **options)


METHOD_SPECS: dict[str, MethodSpec] = {
    spec.key: spec
    for spec in (
        MethodSpec("iia", "iia"),
        MethodSpec("iia-reference", "iia", (("preset", "reference"),)),
        MethodSpec("iia-multilayer", "iia", (("layer", LAST_TWO),)),
        MethodSpec("ig", "ig"),
        MethodSpec("gradcam", "gradcam"),
        MethodSpec("gradcam++", "gradcam++"),
        MethodSpec("attention_rollout", "attention_rollout"),
        MethodSpec("gradient_rollout", "gradient_rollout"),
        MethodSpec("gae", "gae"),
    )
}


@dataclass
class BenchInputs:
    """The inputs of one model: ids, model inputs, targets and (synthetic) object masks.

    Attributes:
        ids: one name per input.
        pixel_values: ``[N, C, H, W]`` model inputs.
        targets: ``[N]`` int64 explained classes.
        masks: ``[N, H, W]`` bool object masks, or ``None``.
        records: per-input facts stored in results.json (label, prediction, ...).
        views: ``[N]`` RGB images at the model input resolution, for the figure.
        figure: indices of the inputs drawn in maps.png.
        heldout: ``{"start", "seed", "size"}`` of synthetic held-out images, else ``None``.
    """

    ids: list[str]
    pixel_values: torch.Tensor
    targets: torch.Tensor
    masks: torch.Tensor | None
    records: list[dict[str, Any]]
    views: list[Image.Image]
    figure: list[int]
    heldout: dict[str, int] | None = None


@dataclass
class MethodResult:
    """Per-image metric values, seconds and maps of one method on one model."""

    per_image: dict[str, list[float]]
    seconds: float
    maps: torch.Tensor  # [N, H, W]
    spec: dict[str, Any]


@dataclass
class BenchConfig:
    """Settings of one benchmark run (see :func:`run_bench`)."""

    suite: str
    out: str
    n: int | None = None
    methods: Sequence[str] | None = None
    device: str | None = None
    batch_size: int = 8
    perturbation_steps: int = 50
    metric_batch_size: int = 64
    internal_batch_size: int | None = None
    threads: int | None = None
    models_dir: str | None = None
    archs: Sequence[str] | None = None
    checkpoint: str | None = None
    overwrite: bool = False
    command: str | None = None
    figure_images: int = 3


# ------------------------------------------------------------------------------ inputs
def model_forward(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``pixel_values [N, C, H, W] -> logits [N, K]`` of ``model`` (eval mode, no gradient)."""

    def forward(pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return extract_logits(model(pixel_values))

    return forward


def _input_view(pixel_values: torch.Tensor, processor: object) -> Image.Image:
    """The model input ``[C, H, W]`` as an RGB image (normalisation undone when the processor tells it)."""
    config = getattr(processor, "data_config", None) or {}
    mean = getattr(processor, "image_mean", None) or config.get("mean")
    std = getattr(processor, "image_std", None) or config.get("std")
    values = pixel_values.detach().float().cpu()
    if mean is not None and std is not None and len(mean) == values.shape[0]:
        values = values * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:
        values = (values - values.min()) / (values.max() - values.min()).clamp_min(1e-12)
    array = (values.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., :3] if array.shape[-1] >= 3 else array[..., 0]).convert("RGB")


def _predict(model: torch.nn.Module, pixel_values: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``[N, K]`` float32 softmax probabilities on CPU."""
    forward = model_forward(model)
    return torch.cat([forward(chunk).float().softmax(dim=1).cpu() for chunk in pixel_values.split(batch_size)])


def synthetic_heldout(folder: Path, n: int, input_size: int | None) -> dict[str, int]:
    """``{"start", "seed", "size"}`` of the held-out images of the checkpoint in ``folder``.

    From ``train_log.json`` (``heldout_indices``, ``data_seed``, ``size``) when present; else
    the convention of ``scripts/train_synthetic.py``: held-out indices start at
    :data:`hf_iia.tools.synthetic.HELDOUT_START`, data seed 0, image size = the model's input size.
    """
    log_path = folder / "train_log.json"
    if log_path.exists():
        log = json.loads(log_path.read_text())
        start, stop = log["heldout_indices"]
        train_stop = log.get("train_indices", [0, 0])[1]
        if start < train_stop:
            raise IIAError(f"{log_path}: held-out indices {start}.. overlap the training indices [0, {train_stop})")
        if n > stop - start:
            raise IIAError(f"{log_path} holds out {stop - start} images, fewer than --n {n}")
        return {"start": int(start), "seed": int(log.get("data_seed", 0)), "size": int(log.get("size", input_size or 64))}
    from ..synthetic import HELDOUT_START

    return {"start": HELDOUT_START, "seed": 0, "size": int(input_size or 64)}


def synthetic_inputs(explainer: IIAExplainer, folder: Path, n: int, figure_images: int, batch_size: int) -> BenchInputs:
    """``n`` held-out synthetic images of the checkpoint in ``folder``, preprocessed by its processor."""
    from ..synthetic import CLASS_NAMES, make_arrays

    config = getattr(explainer.model, "config", None)
    size = getattr(config, "image_size", None)
    heldout = synthetic_heldout(folder, n, size if isinstance(size, int) else None)
    images, masks, labels = make_arrays(n, seed=heldout["seed"], size=heldout["size"], start=heldout["start"])
    pixel_values, _ = explainer.preprocess([Image.fromarray(image, "RGB") for image in images])
    height, width = pixel_values.shape[2:]
    if masks.shape[1:] != (height, width):  # the processor resized: bring the masks along (nearest)
        masks = np.stack([np.asarray(Image.fromarray(m).resize((width, height), Image.Resampling.NEAREST)) for m in masks])
    probabilities = _predict(explainer.model, pixel_values.to(_device_of(explainer.model)), batch_size)
    predicted = probabilities.argmax(dim=1)
    indices = range(heldout["start"], heldout["start"] + n)
    records = [
        {"id": f"synthetic-{index}", "label": int(label), "label_name": CLASS_NAMES[int(label)],
         "predicted": int(pred), "target": int(label), "target_probability": float(probabilities[i, int(label)])}
        for i, (index, label, pred) in enumerate(zip(indices, labels, predicted))
    ]
    figure = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(figure_images, n))})
    return BenchInputs(
        ids=[r["id"] for r in records],
        pixel_values=pixel_values,
        targets=torch.as_tensor(labels, dtype=torch.int64),
        masks=torch.as_tensor(masks, dtype=torch.bool),
        records=records,
        views=[_input_view(p, explainer.processor) for p in pixel_values],
        figure=figure,
        heldout=heldout,
    )


def crop_photos(photos: Sequence[tuple[str, Image.Image]]) -> list[tuple[str, Image.Image]]:
    """Every photo in every :data:`CROPS` box, crop-major: ``[(f"{photo}-{crop}", image), ...]``."""
    crops = []
    for crop, (left, top, right, bottom) in CROPS:
        for name, photo in photos:
            width, height = photo.size
            box = (round(left * width), round(top * height), round(right * width), round(bottom * height))
            crops.append((f"{name}-{crop}", photo.crop(box)))
    return crops


def real_inputs(explainer: IIAExplainer, n: int | None, figure_images: int, batch_size: int) -> BenchInputs:
    """The cropped sample photos (the first ``n``), preprocessed; targets = the model's top-1 classes."""
    from ..demo import sample_images

    crops = crop_photos(sample_images())
    if n is not None:
        if n > len(crops):
            raise IIAError(f"the real suite has {len(crops)} inputs ({len(CROPS)} crops of each photo); got --n {n}")
        crops = crops[:n]
    pixel_values, _ = explainer.preprocess([image for _, image in crops])
    probabilities = _predict(explainer.model, pixel_values.to(_device_of(explainer.model)), batch_size)
    top1 = probabilities.argmax(dim=1)
    labels = explainer.id2label
    records = [
        {"id": name, "size": list(image.size), "target": int(t), "target_name": labels.get(int(t)),
         "target_probability": float(probabilities[i, int(t)])}
        for i, ((name, image), t) in enumerate(zip(crops, top1))
    ]
    full = [i for i, (name, _) in enumerate(crops) if name.endswith("-full")]
    return BenchInputs(
        ids=[name for name, _ in crops],
        pixel_values=pixel_values,
        targets=top1,
        masks=None,
        records=records,
        views=[_input_view(p, explainer.processor) for p in pixel_values],
        figure=(full or list(range(len(crops))))[:figure_images],
    )


def _device_of(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


# -------------------------------------------------------------------------- evaluation
def describe(explainer: IIAExplainer) -> dict[str, Any]:
    """What an explainer integrates: levels, observed taps, steps per path, integrand."""
    spec = explainer.spec
    return {
        "method": explainer.method,
        "levels": [tap for tap, _ in spec.levels],
        "observe": list(spec.observe) if len(spec.observe) <= 4 else f"{len(spec.observe)} taps",
        "steps": [path.steps for path in spec.paths],
        "points_per_image": spec.points_per_image,
        "integrand": getattr(spec.integrand, "__name__", str(spec.integrand)),
    }


def compute_maps(explainer: IIAExplainer, inputs: BenchInputs, batch_size: int) -> tuple[torch.Tensor, float]:
    """``([N, H, W] maps, seconds)`` from batched ``attribute`` calls of ``batch_size`` images."""
    maps, seconds = [], 0.0
    for first in range(0, inputs.pixel_values.shape[0], batch_size):
        batch = slice(first, first + batch_size)
        started = time.perf_counter()
        maps.append(explainer.attribute(inputs.pixel_values[batch], inputs.targets[batch]))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds += time.perf_counter() - started
    return torch.cat(maps), seconds


def pointing_tolerance(size: Sequence[int]) -> int:
    """Pointing-game tolerance in pixels: Zhang et al.'s 15 px at 224 px, scaled to the map's smaller side."""
    return round(POINTING_TOLERANCE_AT_224 * min(size) / 224)


def score_maps(
    model: torch.nn.Module,
    inputs: BenchInputs,
    maps: torch.Tensor,
    *,
    perturbation_steps: int,
    metric_batch_size: int,
) -> dict[str, list[float]]:
    """Per-image metric values of ``maps`` ``[N, H, W]``: localisation (with masks) and deletion / insertion AUC."""
    values: dict[str, list[float]] = {}
    if inputs.masks is not None:
        tolerance = pointing_tolerance(maps.shape[-2:])
        values["pointing_game"] = pointing_game(maps, inputs.masks, tolerance=tolerance).double().tolist()
        values["energy_pointing_game"] = energy_pointing_game(maps, inputs.masks).tolist()
        values["mask_ap"] = mask_average_precision(maps, inputs.masks).tolist()
    device = _device_of(model)
    forward = model_forward(model)
    pixel_values, targets = inputs.pixel_values.to(device), inputs.targets.to(device)
    options = dict(steps=perturbation_steps, batch_size=metric_batch_size)
    values["deletion_auc"] = deletion_auc(forward, pixel_values, maps, targets, baseline=0.0, **options).cpu().tolist()
    values["insertion_auc"] = insertion_auc(forward, pixel_values, maps, targets, **options).cpu().tolist()
    return values


def evaluate_method(
    spec: MethodSpec,
    model: torch.nn.Module,
    processor: object,
    inputs: BenchInputs,
    *,
    batch_size: int = 8,
    perturbation_steps: int = 50,
    metric_batch_size: int = 64,
    internal_batch_size: int | None = None,
) -> MethodResult:
    """Maps of ``spec`` for every input, their metric values and the seconds the maps took."""
    explainer = spec.explainer(model, processor, internal_batch_size)
    maps, seconds = compute_maps(explainer, inputs, batch_size)
    per_image = score_maps(model, inputs, maps, perturbation_steps=perturbation_steps,
                           metric_batch_size=metric_batch_size)
    return MethodResult(per_image=per_image, seconds=seconds, maps=maps, spec=describe(explainer))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Summary of the per-image differences ``a - b`` (same inputs)."""
    return summarise([x - y for x, y in zip(a, b)])


# ------------------------------------------------------------------------------ report
def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the numbers were measured."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_name() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device": str(device),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info.update(_git_state())
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _cpu_name() -> str | None:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else ``None``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _git_state() -> dict[str, Any]:
    """The repository commit the code ran from and whether files differed from it (empty outside a git checkout)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    if commit.returncode != 0:
        return {}
    return {"git_commit": commit.stdout.strip(), "git_modified_files": status.stdout.split("\n")[:1] != [""]}


def _fmt(summary: dict[str, Any], digits: int = 3) -> str:
    if summary["mean"] is None:
        return "–"
    if summary["half_width"] is None:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['half_width']:.{digits}f}"


def best_methods(model_result: dict[str, Any], metric: str) -> list[str]:
    """The methods with the best mean of ``metric`` (several on a tie)."""
    higher = METRICS[metric][1]
    means = {key: m["summary"][metric]["mean"] for key, m in model_result["methods"].items() if metric in m["summary"]}
    if not means:
        return []
    best = max(means.values()) if higher else min(means.values())
    return [key for key, mean in means.items() if abs(mean - best) <= TIE_TOLERANCE]


def markdown(results: dict[str, Any]) -> str:
    """The results.md text: one table per model, then where IIA is not first."""
    settings, machine = results["settings"], results["machine"]
    lines = [
        f"# hf-iia benchmark: {results['suite']} suite",
        "",
        f"Command: `{settings['command']}`  ",
        f"Machine: {machine['processor']}, {machine['cpu_count']} CPUs, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), device {machine['device']}"
        + (f" ({machine['gpu']})" if "gpu" in machine else "")
        + (f", load average at start {machine['load_average_at_start'][0]}" if "load_average_at_start" in machine else "")
        + "  ",
        f"Wall time: {results['timing']['wall_seconds']:.0f} s  ",
        f"Values: mean ± half-width of a Student-t {CONFIDENCE:.0%} confidence interval over the inputs. "
        f"DEL/INS: {settings['perturbation_steps']} steps, softmax probability of the target, deletion to 0 "
        "(normalised space), insertion from a Gaussian blur (11, sigma 5). ↑ higher is better, ↓ lower is better; "
        "the best mean of each column is in bold.",
        "",
    ]
    for model in results["models"]:
        metrics = [m for m in METRICS if any(m in r["summary"] for r in model["methods"].values())]
        lines += [f"## {model['name']} ({model['family']}, {model['n']} inputs)", ""]
        if model.get("note"):
            lines += [model["note"], ""]
        header = ["method"] + [f"{METRICS[m][0]} {'↑' if METRICS[m][1] else '↓'}" for m in metrics] + ["s / map"]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        best = {m: best_methods(model, m) for m in metrics}
        for key, result in model["methods"].items():
            cells = [f"`{key}`"]
            for m in metrics:
                text = _fmt(result["summary"][m])
                cells.append(f"**{text}**" if key in best[m] else text)
            cells.append(f"{model['timing'][key]['seconds_per_map']:.3g}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if "iia" in model["methods"]:
            lines += _iia_not_first(model, metrics, best)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _iia_not_first(model: dict[str, Any], metrics: list[str], best: dict[str, list[str]]) -> list[str]:
    """Sentences saying plainly where IIA (default) is not the best, with paired differences."""
    lines = []
    for metric in metrics:
        if "iia" in best[metric]:
            continue
        winner = best[metric][0]
        diff = model["paired_vs_iia"].get(winner, {}).get(metric)
        iia_mean = model["methods"]["iia"]["summary"][metric]["mean"]
        win_mean = model["methods"][winner]["summary"][metric]["mean"]
        text = f"- {METRICS[metric][0]}: `iia` is not first: `{winner}` {win_mean:.3f} vs `iia` {iia_mean:.3f}"
        if diff and diff["half_width"] is not None:
            text += (f" (paired difference {winner} − iia = {diff['mean']:+.3f}, 95 % CI "
                     f"[{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}])")
        lines.append(text + ".")
    if not lines:
        lines.append("- `iia` has the best mean on every metric here.")
    return lines


def figure(models: list[tuple[str, BenchInputs, dict[str, MethodResult]]], tile: int = 160) -> Image.Image:
    """maps.png: per model, a few inputs (rows) x [input, one overlay per method] (columns)."""
    from ...viz import grid, overlay

    columns = 1 + max(len(results) for _, _, results in models)
    tiles, captions = [], []
    for name, inputs, results in models:
        for index in inputs.figure:
            view = inputs.views[index]
            record = inputs.records[index]
            target = record.get("label_name") or (record.get("target_name") or str(record["target"])).split(",")[0]
            tiles.append(view.resize((tile, tile), Image.Resampling.NEAREST))
            captions.append(f"{name}: {target}" if len(models) > 1 else f"{record['id']}: {target}")
            for key, result in results.items():
                picture = overlay(view, result.maps[index].numpy())
                tiles.append(picture.resize((tile, tile), Image.Resampling.BILINEAR))
                captions.append(key)
            for _ in range(columns - 1 - len(results)):
                tiles.append(Image.new("RGB", (tile, tile), "white"))
                captions.append("")
    return grid(tiles, captions, columns=columns, tile=tile)


# ---------------------------------------------------------------------------------- run
def synthetic_models(models_dir: Path, archs: Sequence[str] | None) -> list[tuple[str, Path]]:
    """``(arch, folder)`` of every benchmark checkpoint under ``models_dir`` (in :data:`SYNTHETIC_ARCHS` order)."""
    wanted = list(archs) if archs else list(SYNTHETIC_ARCHS)
    found = [(arch, models_dir / arch) for arch in wanted if (models_dir / arch / "config.json").exists()]
    if not found:
        raise IIAError(
            f"no synthetic benchmark checkpoints ({', '.join(wanted)}) under {models_dir}; train them with "
            "`python scripts/train_synthetic.py --arch all --out hf_iia/tools/bench/models` (a GPU takes minutes)"
        )
    return found


def _method_keys(methods: Sequence[str] | None) -> list[str]:
    keys = list(methods) if methods else list(METHOD_SPECS)
    unknown = [key for key in keys if key not in METHOD_SPECS]
    if unknown:
        raise IIAError(f"unknown bench method(s) {unknown}; choose from {list(METHOD_SPECS)}")
    return keys


def _methods_for(adapter: Adapter, methods: Sequence[str] | None) -> list[MethodSpec]:
    """The bench columns that apply to the model behind ``adapter``."""
    return [METHOD_SPECS[key] for key in _method_keys(methods) if METHODS[METHOD_SPECS[key].method].applies_to(adapter)]


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run one suite and write ``results.md``, ``results.json`` and ``maps.png`` into ``config.out``.

    Returns the results dictionary written to results.json.
    """
    if config.suite not in SUITES:
        raise IIAError(f"unknown suite {config.suite!r}; choose one of {SUITES}")
    if config.n is not None and config.n < 1:
        raise IIAError(f"--n must be a positive number of inputs, got {config.n}")
    _method_keys(config.methods)  # unknown names fail before any work
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    # Refuse existing outputs before any work, so a refused run leaves nothing half-written.
    paths = {name: output_path(out, name, overwrite=config.overwrite) for name in ("results.md", "results.json", "maps.png")}
    started = time.perf_counter()

    if config.suite == "synthetic":
        folders = synthetic_models(Path(config.models_dir) if config.models_dir else DEFAULT_MODELS_DIR, config.archs)
        n = config.n or 300
    else:
        from ..demo import build_lite0_checkpoint

        checkpoint = Path(config.checkpoint) if config.checkpoint else build_lite0_checkpoint(out / "efficientnet_lite0")
        folders = [("efficientnet_lite0" if not config.checkpoint else checkpoint.name, checkpoint)]
        n = config.n

    models_json, figure_models = [], []
    device = None
    for name, folder in folders:
        base = IIAExplainer(str(folder), device=config.device or "cpu", progress=False)
        device = _device_of(base.model)
        family = base.family.name
        if config.suite == "synthetic":
            inputs = synthetic_inputs(base, folder, n, config.figure_images, config.metric_batch_size)
        else:
            inputs = real_inputs(base, n, config.figure_images, config.metric_batch_size)
        results: dict[str, MethodResult] = {}
        for spec in _methods_for(base.adapter, config.methods):
            print(f"[bench] {name}: {spec.key} on {len(inputs.ids)} inputs", file=sys.stderr, flush=True)
            results[spec.key] = evaluate_method(
                spec, base.model, base.processor, inputs, batch_size=config.batch_size,
                perturbation_steps=config.perturbation_steps, metric_batch_size=config.metric_batch_size,
                internal_batch_size=config.internal_batch_size,
            )
        models_json.append(_model_json(name, folder, family, inputs, results))
        figure_models.append((name, inputs, results))

    results_json = {
        "suite": config.suite,
        "settings": {
            **{k: v for k, v in asdict(config).items() if k not in ("out", "overwrite", "command")},
            "methods": [spec for spec in (config.methods or list(METHOD_SPECS))],
            "command": config.command or f"hf-iia bench --suite {config.suite} --out {config.out}",
            "confidence_interval": f"Student-t {CONFIDENCE:.0%}: mean ± t(0.975, n-1) * sd(ddof=1) / sqrt(n)",
            "pointing_game": f"hit if the map's maximum is within {POINTING_TOLERANCE_AT_224} px x (input side / 224) "
                             "of the object mask",
            "deletion": "pixels ranked by decreasing map value set to 0 (normalised space)",
            "insertion": "from gaussian_blur(kernel 11, sigma 5), pixels restored by decreasing map value",
            "target": "ground-truth label" if config.suite == "synthetic" else "the model's top-1 class",
        },
        "machine": machine_info(device or torch.device("cpu")),
        "models": models_json,
        "timing": {"wall_seconds": time.perf_counter() - started},
    }
    write_atomic(paths["results.json"], json.dumps(results_json, indent=1).encode())
    write_atomic(paths["results.md"], markdown(results_json).encode())
    buffer = io.BytesIO()
    figure(figure_models).save(buffer, format="PNG")
    write_atomic(paths["maps.png"], buffer.getvalue())
    return results_json


def _model_json(name: str, folder: Path, family: str, inputs: BenchInputs, results: dict[str, MethodResult]) -> dict:
    """The results.json entry of one model. Timings live under ``timing`` (the only non-deterministic values)."""
    entry: dict[str, Any] = {
        "name": name,
        "checkpoint": str(folder),
        "family": family,
        "n": len(inputs.ids),
        "inputs": inputs.records,
        "methods": {
            key: {
                "explainer": result.spec,
                "per_image": result.per_image,
                "summary": {metric: summarise(values) for metric, values in result.per_image.items()},
            }
            for key, result in results.items()
        },
        "paired_vs_iia": {},
        "timing": {
            key: {"seconds": result.seconds, "seconds_per_map": result.seconds / max(1, len(inputs.ids))}
            for key, result in results.items()
        },
    }
    if inputs.heldout:
        entry["heldout"] = {**inputs.heldout, "n": len(inputs.ids)}
    if "iia" in results:
        entry["paired_vs_iia"] = {
            key: {metric: paired_difference(values, results["iia"].per_image[metric])
                  for metric, values in result.per_image.items()}
            for key, result in results.items() if key != "iia"
        }
    if {"iia", "iia-reference"} <= set(results):
        difference = (results["iia"].maps - results["iia-reference"].maps).abs().max().item()
        entry["iia_vs_reference_max_abs_map_difference"] = difference
        integrands = (results["iia"].spec["integrand"], results["iia-reference"].spec["integrand"])
        if difference < 1e-4:
            why = (" — the same maps: the explained layer feeds pooling + a linear head, so the inner path only "
                   "rescales the map.")
        elif integrands[0] != integrands[1]:
            why = (f" — the presets' integrands differ (`{integrands[0]}` vs `{integrands[1]}`); with the same "
                   "integrand the inner path would only rescale the map when the layer feeds pooling + a linear head.")
        else:
            why = "."
        entry["note"] = f"Largest |`iia` − `iia-reference`| over all map pixels: {difference:.2g}{why}"
    return entry


__all__ = [
    "CROPS",
    "METHOD_SPECS",
    "METRICS",
    "BenchConfig",
    "BenchInputs",
    "MethodResult",
    "MethodSpec",
    "crop_photos",
    "evaluate_method",
    "markdown",
    "real_inputs",
    "run_bench",
    "synthetic_heldout",
    "synthetic_inputs",
]
