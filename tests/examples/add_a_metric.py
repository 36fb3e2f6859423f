"""The README's "Add a metric" example: this one file declares a metric; importing it is the one other line.

The share of each map's positive mass in its 10 % highest pixels: 1 when the map is concentrated there, 0.1 for
a uniform map. Once imported, the benchmark and the audit compute it and show it in their tables.
"""

import torch

from hf_iia.metrics import Metric, MetricInputs, register_metric


def top_decile_mass(inputs: MetricInputs) -> torch.Tensor:
    """``[B]`` share of each map's positive mass in its top 10 % pixels (NaN, i.e. undefined, without any)."""
    mass = inputs.maps.flatten(1).clamp(min=0).double()  # [B, H * W]
    top = mass.topk(max(1, mass.shape[1] // 10), dim=1).values  # [B, H * W // 10]
    return top.sum(dim=1) / mass.sum(dim=1)


register_metric(Metric("top_decile_mass", "top-10 % mass", True, top_decile_mass))
