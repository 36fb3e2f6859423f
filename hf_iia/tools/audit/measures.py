"""What an audit measures per row, read from the metric declarations (:mod:`hf_iia.metrics.registry`).

The audit computes every registered metric of the ``rise`` protocol that is not expensive and that its
inputs allow (a forward, the maps, the targets; object masks when the dataset has them), beside its own
spurious-cue indicators (:mod:`.indicators`): the columns of ``results.parquet``, the measures of
``summary.json`` and the columns of the model card follow from them.
"""

from __future__ import annotations

from ...metrics import Metric, available_metrics
from .indicators import CORNERS, corner_column

OBJECT_MASS = "object_mass"
"""The audit's name of the energy pointing game (its canonical key ``energy_pointing_game`` has this alias): the
share of the map's mass on the object, read beside the audit's other shares of mass; audits have stored it
under this name from the first one on."""

INDICATORS: tuple[str, ...] = ("border_mass", *(corner_column(corner) for corner in CORNERS))
"""The spurious-cue indicators of every row (:func:`~.indicators.region_shares`)."""


def audit_metrics() -> list[Metric]:
    """The registered metrics the audit computes: those without masks first, then those with, each in
    registration order. Not those that compare with a second class's map (the class sensitivity): that map would
    double the audit's cost per row; the benchmark reports them."""
    chosen = [
        metric
        for metric in available_metrics().values()
        if metric.protocol == "rise" and not metric.expensive and not metric.needs_other_maps
    ]
    return sorted(chosen, key=lambda metric: metric.needs_masks)


def column_name(metric: Metric) -> str:
    """The audit's column of ``metric``: its key, or :data:`OBJECT_MASS` for the energy pointing game."""
    return OBJECT_MASS if OBJECT_MASS in metric.aliases else metric.key


def measures() -> tuple[str, ...]:
    """The per-row measures in column order: the explained class's score, the metrics without masks, the
    indicators, then (with masks) the mask's area and the metrics with masks."""
    metrics = audit_metrics()
    return (
        "score",
        *(column_name(metric) for metric in metrics if not metric.needs_masks),
        *INDICATORS,
        "mask_area",
        *(column_name(metric) for metric in metrics if metric.needs_masks),
    )
