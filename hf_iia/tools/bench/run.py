"""The benchmark that shows where IIA stands: faithfulness, localisation and cost of every method.

Three suites (``hf-iia bench --suite synthetic|textures|real --out DIR``), all offline:

* ``synthetic``: every trained tiny checkpoint under ``hf_iia/tools/bench/models/<arch>/``
  (``vit``, ``deit``, ``resnet``, ``convnext``; see ``scripts/train_synthetic.py``) on
  ``n`` held-out images of :mod:`hf_iia.tools.synthetic`: the indices, data seed and image
  size come from the checkpoint's ``train_log.json`` (``heldout_indices``), else from the
  training script's convention (indices from :data:`hf_iia.tools.synthetic.HELDOUT_START`, seed 0, the
  processor's size), so they never overlap the training indices ``[0, train_size)``.
  Target: the ground-truth label (the class whose object mask is the evidence).
  Metrics: pointing game, energy pointing game and mask average precision against the
  object mask, deletion and insertion AUC, seconds per map.
* ``textures``: the same protocol on the real-texture suite (:mod:`hf_iia.tools.textures`: a shape filled with
  one of six photo textures among distractor shapes filled with photo crops, on a photo background, sometimes
  occluded), with the checkpoints under ``hf_iia/tools/bench/models_textures/<arch>/`` (``vit``, ``deit``,
  ``resnet``; ``scripts/train_synthetic.py --suite textures``). Here attention to whatever stands out does not
  find the evidence: the distractors stand out as much as the object, only the texture tells the class.
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
``iia3``               both    ``preset="iia3"`` (the image and the last two stages or blocks; provisional steps)
``iia3-earliest``      cnn     ``preset="iia3", combine="earliest"`` (the map at the second-to-last stage)
``iia3-product``       cnn     ``preset="iia3", combine="product"`` (both stages' normalised maps multiplied)
``ig``                 both    Integrated Gradients, 50 steps, zero baseline
``gradcam``            cnn     Grad-CAM at the default layer
``gradcam++``          cnn     Grad-CAM++ at the default layer
``layercam``           cnn     LayerCAM at the default layer
``scorecam``           cnn     Score-CAM at the default layer (one forward pass per channel)
``attention_rollout``  vit     Attention Rollout
``gradient_rollout``   vit     Gradient Rollout (IIA's ViT integrand at the input only)
``gae``                vit     Chefer et al. 2021
``attnlrp``            vit     AttnLRP (Achtibat et al. 2024), ViT and DeiT only
=====================  ======  =================================================================

Metric settings: the pointing game counts a hit when the map's maximum lies within 15 px of the
object at 224 px input (Zhang et al.), scaled to the input size (4 px at 64 px); deletion replaces
pixels by 0 in normalised input space (the dataset mean colour), insertion starts from a Gaussian
blur (kernel 11, sigma 5); both use ``perturbation_steps`` steps and the softmax probability of the
target (:mod:`hf_iia.metrics`). Every other registered metric of the ``rise`` protocol
(:func:`hf_iia.metrics.available_metrics`) that the inputs allow is computed too. Maps are computed
with batched ``attribute`` calls of ``batch_size`` images; seconds per map = wall time of those
calls / number of images.

Protocol (``--protocol``): ``rise`` (default) computes the metrics above; ``paper`` adds the
authors' protocol (Chefer et al., 2021): POS / NEG accuracy AUC x100 and their probability
variants (DEL / INS) with black pixels, ADP / PIC, SIC / AIC and, on the synthetic suite, the
segmentation pixel accuracy, mIoU, mAP and mF1 (the metrics declared with ``protocol="paper"``,
:func:`.evaluate.score_maps`); it needs the
processor's ``image_mean`` / ``image_std``.

Spread: mean ± the half-width of a Student-t 95 % confidence interval over the per-image
values (:mod:`hf_iia.tools.bench.stats`; closed form, no resampling). On the real suite the five
crops of a photo are not independent, so that interval is optimistic.

Outputs in ``DIR`` (nothing elsewhere; the real suite also writes the Lite0 checkpoint
folder ``DIR/efficientnet_lite0`` once, unless ``checkpoint=`` is given): ``results.md``
(tables), ``results.json`` (settings, machine, per-image values and summaries, so every
number can be recomputed) and ``maps.png`` (a few inputs x methods).

Modules: :mod:`.inputs` (the images, targets and masks of each suite), :mod:`.evaluate` (the
method columns, maps and their metric values), :mod:`.report` (``results.md``, ``maps.png``,
machine facts), :mod:`.stats` (confidence intervals) and this one (settings and the driver).
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ...adapters import Adapter
from ...errors import IIAError
from ...explainer import IIAExplainer
from ...outputs import output_path, write_atomic
from .evaluate import (
    METHOD_SPECS,
    POINTING_TOLERANCE_AT_224,
    PROTOCOLS,
    MethodResult,
    MethodSpec,
    evaluate_method,
    paired_difference,
)
from .inputs import CROPS, BenchInputs, crop_photos, device_of, real_inputs, synthetic_heldout, synthetic_inputs
from .report import figure, machine_info, markdown
from .stats import CONFIDENCE, summarise

SUITES = ("synthetic", "textures", "real")
PAPER_SETTINGS = {
    "pos_neg": "accuracy AUC x100 over fractions 0, 0.1, ..., 0.9 (range [0, 90]); pixels set to black "
    "((0 - mean) / std), most (POS) / least (NEG) relevant first",
    "del_ins_prob": "the POS / NEG curves scored with the target's softmax probability, AUC x100",
    "adp_pic": "image x min-max normalised map (unnormalised space); ADP = 100 max(0, p - p_m) / p, "
    "PIC = 100 [p_m > p]",
    "sic_aic": "PAIR saliency PIC metric, default thresholds, 1 % random mask (seed 0), Gaussian bokeh "
    "(sigma 5), lossless WebP size; None where the image is excluded",
    "segmentation": "map min-max normalised, object where above its mean; per-image pixel accuracy, "
    "mIoU (background, object), two-class AP, object F1",
}
SYNTHETIC_ARCHS = ("vit", "deit", "resnet", "convnext", "swin", "regnet")
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent / "models"
TEXTURE_ARCHS = ("vit", "deit", "resnet")
TEXTURES_MODELS_DIR = Path(__file__).resolve().parent / "models_textures"
GENERATED = {"synthetic": (DEFAULT_MODELS_DIR, SYNTHETIC_ARCHS), "textures": (TEXTURES_MODELS_DIR, TEXTURE_ARCHS)}
"""``suite -> (checkpoint folder, architectures)`` of the generated suites."""


@dataclass
class BenchConfig:
    """Settings of one benchmark run (see :func:`run_bench`)."""

    suite: str
    out: str
    protocol: str = "rise"
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


def synthetic_models(
    models_dir: Path | None, archs: Sequence[str] | None, suite: str = "synthetic"
) -> list[tuple[str, Path]]:
    """``(arch, folder)`` of every benchmark checkpoint of the generated ``suite`` under ``models_dir`` (default: the
    suite's committed folder, :data:`GENERATED`), in the suite's architecture order."""
    default_dir, default_archs = GENERATED[suite]
    models_dir = models_dir or default_dir
    wanted = list(archs) if archs else list(default_archs)
    found = [(arch, models_dir / arch) for arch in wanted if (models_dir / arch / "config.json").exists()]
    if not found:
        raise IIAError(
            f"no {suite} benchmark checkpoints ({', '.join(wanted)}) under {models_dir}; they ship with the git "
            "repository (not the wheel): run from a checkout, or train them with "
            f"`python scripts/train_synthetic.py --suite {suite} --arch ARCH --out {default_dir}`"
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
    return [METHOD_SPECS[key] for key in _method_keys(methods) if METHOD_SPECS[key].applies_to(adapter)]


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run one suite and write ``results.md``, ``results.json`` and ``maps.png`` into ``config.out``.

    Returns the results dictionary written to results.json.
    """
    if config.suite not in SUITES:
        raise IIAError(f"unknown suite {config.suite!r}; choose one of {SUITES}")
    if config.protocol not in PROTOCOLS:
        raise IIAError(f"unknown protocol {config.protocol!r}; choose one of {PROTOCOLS}")
    if config.n is not None and config.n < 1:
        raise IIAError(f"--n must be a positive number of inputs, got {config.n}")
    _method_keys(config.methods)  # unknown names fail before any work
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    # Refuse existing outputs before any work, so a refused run leaves nothing half-written.
    paths = {
        name: output_path(out, name, overwrite=config.overwrite) for name in ("results.md", "results.json", "maps.png")
    }
    started = time.perf_counter()

    if config.suite in GENERATED:
        folders = synthetic_models(Path(config.models_dir) if config.models_dir else None, config.archs, config.suite)
    else:
        from ..demo import build_lite0_checkpoint

        checkpoint = (
            Path(config.checkpoint) if config.checkpoint else build_lite0_checkpoint(out / "efficientnet_lite0")
        )
        folders = [("efficientnet_lite0" if not config.checkpoint else checkpoint.name, checkpoint)]

    models_json, figure_models = [], []
    device = None
    for name, folder in folders:
        base = IIAExplainer(str(folder), device=config.device or "cpu", progress=False)
        device = device_of(base.model)
        family = base.family.name
        if config.suite in GENERATED:
            inputs = synthetic_inputs(
                base, folder, config.n or 300, config.figure_images, config.metric_batch_size, config.suite
            )
        else:
            inputs = real_inputs(base, config.n, config.figure_images, config.metric_batch_size)
        results: dict[str, MethodResult] = {}
        specs = _methods_for(base.adapter, config.methods)
        bar = tqdm(specs, desc=f"bench {name} ({len(inputs.ids)} inputs)", unit="method", file=sys.stderr)
        for spec in bar:
            bar.set_postfix_str(spec.key)
            results[spec.key] = evaluate_method(
                spec,
                base.model,
                base.processor,
                inputs,
                batch_size=config.batch_size,
                perturbation_steps=config.perturbation_steps,
                metric_batch_size=config.metric_batch_size,
                internal_batch_size=config.internal_batch_size,
                protocol=config.protocol,
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
            "target": "ground-truth label" if config.suite in GENERATED else "the model's top-1 class",
            **(PAPER_SETTINGS if config.protocol == "paper" else {}),
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
            key: {
                metric: paired_difference(values, results["iia"].per_image[metric])
                for metric, values in result.per_image.items()
            }
            for key, result in results.items()
            if key != "iia"
        }
    if {"iia", "iia-reference"} <= set(results):
        difference = (results["iia"].maps - results["iia-reference"].maps).abs().max().item()
        entry["iia_vs_reference_max_abs_map_difference"] = difference
        integrands = (results["iia"].spec["integrand"], results["iia-reference"].spec["integrand"])
        if difference < 1e-4:
            why = (
                " — the same maps: the explained layer feeds pooling + a linear head, so the inner path only "
                "rescales the map."
            )
        elif integrands[0] != integrands[1]:
            why = (
                f" — the presets' integrands differ (`{integrands[0]}` vs `{integrands[1]}`); with the same "
                "integrand the inner path would only rescale the map when the layer feeds pooling + a linear head."
            )
        else:
            why = "."
        entry["note"] = f"Largest |`iia` − `iia-reference`| over all map pixels: {difference:.2g}{why}"
    return entry


__all__ = [
    "CROPS",
    "DEFAULT_MODELS_DIR",
    "METHOD_SPECS",
    "TEXTURES_MODELS_DIR",
    "BenchConfig",
    "crop_photos",
    "run_bench",
    "synthetic_heldout",
]
