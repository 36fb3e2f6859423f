"""One declaration per metric: the single place where its key, title, direction and needs live.

Each metric module declares its metrics beside their code with :func:`register_metric`; the benchmark
(``hf_iia.tools.bench``: its per-image values and ``results.md``) and the audit (its per-row columns,
``summary.json`` and model card) read the declarations, so a new metric is one file that declares it plus
one line that imports that file::

    import torch
    from hf_iia.metrics import Metric, MetricInputs, register_metric

    def top_decile_mass(inputs: MetricInputs) -> torch.Tensor:
        ...  # [B] one value per image (NaN where undefined)

    register_metric(Metric("top_decile_mass", "top-10 % mass", True, top_decile_mass))

:func:`available_metrics` lists them in registration order (the order of the tables' columns).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import MetricError
from .inputs import MetricInputs

Protocol = Literal["rise", "paper"]
"""Which benchmark protocol computes a metric: ``rise`` (every run, and the audit) or ``paper`` (``--protocol
paper`` only: the evaluation protocol of the papers IIA's authors report)."""


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes:
        key: the name of its values in results (bench ``results.json``, audit columns and ``summary.json``).
        title: its short column title (bench ``results.md``).
        higher_is_better: its direction (``↑`` / ``↓`` in tables, the best mean in bold).
        compute: ``MetricInputs -> [B]`` per-image values (float or bool); NaN where the metric is undefined on
            an image (stored as ``None``).
        name: its name in prose and model cards (``""``: the title).
        needs_forward: it runs the model (``forward`` and ``pixel_values``).
        needs_masks: it compares the maps with object masks.
        needs_normalisation: it acts on the unnormalised image (``image_mean``, ``image_std``).
        needs_other_maps: it compares the maps with maps of a second class (``other_maps``).
        protocol: see :data:`Protocol`.
        expensive: left out when a caller asks for the cheap metrics only (SIC / AIC: 26 forward passes and
            WebP encodings per image).
        percent: shown as a percentage in model cards (a share or a hit rate).
        boolean: each value is a hit or a miss (1.0 / 0.0 in results; a bool column where columns are typed).
        model_card: reported as a Hub ``eval_results`` entry of audit model cards.
        aliases: other keys it is stored under (older results and cards still read).
    """

    key: str
    title: str
    higher_is_better: bool
    compute: Callable[[MetricInputs], torch.Tensor]
    name: str = ""
    needs_forward: bool = False
    needs_masks: bool = False
    needs_normalisation: bool = False
    needs_other_maps: bool = False
    protocol: Protocol = "rise"
    expensive: bool = False
    percent: bool = False
    boolean: bool = False
    model_card: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """Its name in prose and cards: :attr:`name`, else :attr:`title`."""
        return self.name or self.title

    @property
    def arrow(self) -> str:
        """``↑`` when higher is better, else ``↓``."""
        return "↑" if self.higher_is_better else "↓"

    def applies_to(self, inputs: MetricInputs) -> bool:
        """Whether ``inputs`` hold everything the metric needs."""
        return (
            (not self.needs_forward or (inputs.forward is not None and inputs.pixel_values is not None))
            and (not self.needs_masks or inputs.masks is not None)
            and (not self.needs_normalisation or (inputs.image_mean is not None and inputs.image_std is not None))
            and (not self.needs_other_maps or inputs.other_maps is not None)
        )

    def values(self, inputs: MetricInputs) -> list[float | None]:
        """``[B]`` per-image values as floats on the CPU (a bool as 0.0 / 1.0), ``None`` where undefined."""
        result = self.compute(inputs)
        if not isinstance(result, torch.Tensor) or result.shape != (inputs.maps.shape[0],):
            raise MetricError(
                f"metric {self.key!r} must return a [B] = [{inputs.maps.shape[0]}] tensor, one value per image; got "
                f"{type(result).__name__} {list(getattr(result, 'shape', []))}."
            )
        return [None if math.isnan(value) else value for value in result.detach().to(torch.float64).cpu().tolist()]


_REGISTRY: dict[str, Metric] = {}
_ALIASES: dict[str, str] = {}


def register_metric(metric: Metric) -> Metric:
    """Declare ``metric`` (its key and aliases must be free); returns it.

    Raises:
        MetricError: if a registered metric already uses its key or one of its aliases.
    """
    taken = [name for name in (metric.key, *metric.aliases) if name in _REGISTRY or name in _ALIASES]
    if taken:
        raise MetricError(f"metric name(s) {taken} are registered already; pick another key or unregister it first.")
    _REGISTRY[metric.key] = metric
    _ALIASES.update(dict.fromkeys(metric.aliases, metric.key))
    return metric


def unregister_metric(key: str) -> Metric:
    """Remove the metric registered under ``key`` (or one of its aliases) and return it."""
    metric = get_metric(key)
    del _REGISTRY[metric.key]
    for alias in metric.aliases:
        del _ALIASES[alias]
    return metric


def get_metric(name: str) -> Metric:
    """The metric registered under ``name``, a key or an alias (``object_mass``: the energy pointing game).

    Raises:
        MetricError: if no metric has that key or alias.
    """
    metric = _REGISTRY.get(_ALIASES.get(name, name))
    if metric is None:
        raise MetricError(f"unknown metric {name!r}; registered: {list(_REGISTRY)} (aliases {list(_ALIASES)}).")
    return metric


def available_metrics() -> dict[str, Metric]:
    """The registered metrics, key -> :class:`Metric` in registration order; ``metric.higher_is_better`` is the
    direction of each (a copy: registering goes through :func:`register_metric`)."""
    return dict(_REGISTRY)
