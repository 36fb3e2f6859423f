"""Integrated Gradients (Sundararajan et al. 2017) on the image path, through IIA's engine."""

from __future__ import annotations

import torch
from torch import nn

from ..adapters import Adapter, adapter_for
from ..adapters.plain import PlainAdapter
from ..engine import INPUT_TAP, IntegralSpec, Start, make_spec
from ..errors import IIAError, MethodError
from ..fusions import integrated_gradients
from ..integrands import gradient
from .base import Fusion, Method, MethodOptions, input_size, methods_for, register_method

IG_STEPS = 50  # Captum's default n_steps
IG_BASELINE = 0.0  # the all-zero input in normalised pixel space, as IIA's image path
# Every IG point runs forward and backward through the whole network and keeps all its activations, so a point costs
# what an attention model's does: the default chunk is small (the family's own where smaller). On CPU, chunks of 64
# points also push the large activations over malloc's mmap threshold, which doubles the time (BENCHMARKS.md).
IG_INTERNAL_BATCH_SIZE = 16


@register_method("ig")
class IntegratedGradients(Method):
    """``dy/dx`` on the image path (right Riemann sum, zero baseline or ``start=``); ``(x - x') *`` it, channel sum,
    signed (so the map sums to about ``f(x) - f(x')``). Any model: it reads the input only."""

    options = frozenset({"steps", "start"})
    signed = True

    def adapter(self, model: nn.Module, options: MethodOptions) -> Adapter:
        try:
            family = adapter_for(model)
        except IIAError:  # no family adapter: any module's input is explained as it is
            family = None
        if family is not None and family.input_names:
            raise MethodError(
                f"ig calls {type(model).__name__} with pixel_values alone, but it also reads "
                f"{list(family.input_names)} (NaFlex); choose one of {[m for m in methods_for(family) if m != 'ig']}"
            )
        family_default = IG_INTERNAL_BATCH_SIZE if family is None else family.default_internal_batch_size
        return PlainAdapter(model, min(IG_INTERNAL_BATCH_SIZE, family_default))

    def spec(self, adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
        """The gradient with respect to the input on the image path, right Riemann sum (as Captum's
        ``riemann_right``)."""
        steps = IG_STEPS if options.steps is None else options.steps
        if not isinstance(steps, int):
            if len(steps) != 1:
                raise MethodError(f"ig integrates one path (the image), so steps= takes one int, got {list(steps)}")
            (steps,) = steps
        return make_spec(
            (), (INPUT_TAP,), (int(steps),), gradient, baselines=(IG_BASELINE,), rules=("riemann_right",), start=start
        )

    def fuse(self, adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        """``(x - x') * dy/dx`` summed over channels, from the constant baseline ``x'``."""
        return _ig_map(adapter, integrals, pixel_values, IG_BASELINE)

    def fusion(self, adapter: Adapter, options: MethodOptions, spec: IntegralSpec) -> Fusion:
        """IG's map from the path's own start: ``(x - x')`` with ``x'`` the spec's start of each image."""
        if spec.start is None:
            return self.fuse

        def fuse(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
            return _ig_map(adapter, integrals, pixel_values, spec.image_baseline(pixel_values))

        return fuse


def _ig_map(
    adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor, baseline: float | torch.Tensor
) -> torch.Tensor:
    """``(x - x') * dy/dx`` (:func:`~hf_iia.fusions.integrated_gradients`) summed over channels: ``[B, H, W]``."""
    attributions = integrated_gradients(integrals[INPUT_TAP], pixel_values, baseline)
    return adapter.to_map({INPUT_TAP: attributions}, input_size(pixel_values))
