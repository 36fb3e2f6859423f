"""The benchmark's method columns, their maps and the per-image metric values of those maps."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from ...adapters import Adapter, FeatureMapAdapter, adapter_for
from ...errors import IIAError
from ...explainer import IIAExplainer
from ...methods import METHODS, available_methods
from ...metrics import MetricInputs, available_metrics
from .inputs import BenchInputs, device_of, normalisation
from .stats import summarise

POINTING_TOLERANCE_AT_224 = 15
"""Pointing-game hit radius (pixels at 224 px input; scaled with the input size: 4 px at 64 px)."""

PROTOCOLS = ("rise", "paper")
"""The metric declarations' ``protocol`` values (:data:`hf_iia.metrics.registry.Protocol`): ``rise``, localisation and
RISE deletion / insertion; ``paper``, those plus the authors' protocol (:func:`score_maps`)."""

LAST_TWO = "@last-two"
"""A ``layer`` option value resolved per model to the adapter's last two taps (multi-layer IIA)."""


@dataclass(frozen=True)
class MethodSpec:
    """One benchmark column: an explainer method and its options (``layer`` may be :data:`LAST_TWO`), run on the
    models explained through ``requires`` (an adapter capability, e.g. feature maps for ``combine=``)."""

    key: str
    method: str
    options: tuple[tuple[str, Any], ...] = ()
    requires: type = Adapter

    def applies_to(self, adapter: Adapter) -> bool:
        """Whether the column runs on the model behind ``adapter``."""
        return METHODS[self.method].applies_to(adapter) and isinstance(adapter, self.requires)

    def explainer(self, model: torch.nn.Module, processor: object, internal_batch_size: int | None) -> IIAExplainer:
        """An explainer of this method sharing ``model`` (no copy)."""
        options = dict(self.options)
        if options.get("layer") == LAST_TWO:
            options["layer"] = list(adapter_for(model).taps[-2:])
        return IIAExplainer(
            model, processor, method=self.method, internal_batch_size=internal_batch_size, progress=False, **options
        )


METHOD_SPECS: dict[str, MethodSpec] = {
    spec.key: spec
    for spec in (
        MethodSpec("iia", "iia"),
        MethodSpec("iia-reference", "iia", (("preset", "reference"),)),
        MethodSpec("iia-multilayer", "iia", (("layer", LAST_TWO),)),
        MethodSpec("iia3", "iia", (("preset", "iia3"),)),
        MethodSpec("iia3-earliest", "iia", (("preset", "iia3"), ("combine", "earliest")), FeatureMapAdapter),
        MethodSpec("iia3-product", "iia", (("preset", "iia3"), ("combine", "product")), FeatureMapAdapter),
        *(MethodSpec(name, name) for name in available_methods() if name != "iia"),  # every other method as it is
    )
}


@dataclass
class MethodResult:
    """Per-image metric values, seconds and maps of one method on one model."""

    per_image: dict[str, list[float | None]]
    seconds: float
    maps: torch.Tensor  # [N, H, W]
    spec: dict[str, Any]


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
    starts = range(0, inputs.pixel_values.shape[0], batch_size)
    for first in tqdm(starts, desc=f"  {explainer.method} maps", unit="batch", leave=False, delay=2.0):
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
    explainer: IIAExplainer,
    inputs: BenchInputs,
    maps: torch.Tensor,
    *,
    perturbation_steps: int,
    metric_batch_size: int,
    protocol: str = "rise",
    information: bool = True,
    other_maps: torch.Tensor | None = None,
) -> dict[str, list[float | None]]:
    """Per-image values of ``maps`` ``[N, H, W]``: every registered metric (:func:`hf_iia.metrics.available_metrics`)
    of the ``rise`` protocol, and with ``protocol="paper"`` those of the authors' protocol too (POS / NEG, DEL /
    INS on probabilities, ADP / PIC, SIC / AIC, segmentation), that the inputs allow (the mask metrics need the
    synthetic suite's masks). ``information=False`` leaves out the expensive ones (SIC / AIC). ``None`` marks an
    input where a metric is undefined (SIC / AIC on an excluded image). ``other_maps`` ``[N, H, W]``, the same
    method's maps of ``inputs.second_targets``, add the class sensitivity (:mod:`hf_iia.metrics.sensitivity`)."""
    stats = normalisation(explainer.processor)
    if protocol == "paper" and stats is None:
        raise IIAError("--protocol paper needs the processor's image_mean and image_std (black pixels, ADP, SIC)")
    # The curves' perturbed batches are built where the model runs, so only scores come back.
    device = device_of(explainer.model)
    batch = MetricInputs(
        maps=maps,
        targets=inputs.targets.to(device),
        pixel_values=inputs.pixel_values.to(device),
        forward=explainer.logits,
        masks=inputs.masks,
        image_mean=stats[0] if stats else None,
        image_std=stats[1] if stats else None,
        perturbation_steps=perturbation_steps,
        batch_size=metric_batch_size,
        pointing_tolerance=pointing_tolerance(maps.shape[-2:]),
        other_maps=other_maps,
    )
    protocols = ("rise", "paper") if protocol == "paper" else ("rise",)
    return {
        key: metric.values(batch)
        for key, metric in available_metrics().items()
        if metric.protocol in protocols and metric.applies_to(batch) and (information or not metric.expensive)
    }


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
    protocol: str = "rise",
) -> MethodResult:
    """Maps of ``spec`` for every input, their metric values and the seconds the maps took. With
    ``inputs.second_targets`` the method also explains each input's second class, for the class sensitivity (those
    maps are not counted in the seconds)."""
    explainer = spec.explainer(model, processor, internal_batch_size)
    maps, seconds = compute_maps(explainer, inputs, batch_size)
    other_maps = None
    if inputs.second_targets is not None:
        other_maps, _ = compute_maps(explainer, replace(inputs, targets=inputs.second_targets), batch_size)
    per_image = score_maps(
        explainer,
        inputs,
        maps,
        perturbation_steps=perturbation_steps,
        metric_batch_size=metric_batch_size,
        protocol=protocol,
        other_maps=other_maps,
    )
    return MethodResult(per_image=per_image, seconds=seconds, maps=maps, spec=describe(explainer))


def paired_difference(a: Sequence[float | None], b: Sequence[float | None]) -> dict[str, Any]:
    """Summary of the per-image differences ``a - b`` (same inputs; inputs where either is ``None`` are left out)."""
    return summarise([x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None])
