"""IIA settings: the :class:`Preset` record and the resolvers of the per-path options.

Each model family declares its own presets beside its adapter (``Family.presets`` in
:mod:`hf_iia.adapters`): ``default`` is the true nested integral (docs/ALGORITHM.md), with
settings chosen by the benchmark (docs/BENCHMARKS.md); ``reference`` is what the authors'
published code computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .engine import RULES
from .errors import IIAError
from .integrands import INTEGRANDS


@dataclass(frozen=True)
class Preset:
    """IIA settings: ``steps`` of the image path and of each level, the integrand's name, interpolation on/off.

    ``detach_levels`` makes the interpolated level a constant (no gradient through it to earlier layers),
    as the authors' ViT code computes it. ``fusion`` names the rollout of an attention family's map
    (:data:`hf_iia.fusions.ROLLOUTS`); feature-map families have one fusion, the channel sum, and leave it ``None``.
    """

    input_steps: int
    level_steps: int
    integrand: str
    interpolate_levels: bool = True
    detach_levels: bool = False
    rule: str = "endpoints"  # quadrature rule of every path (hf_iia.engine.RULES)
    fusion: str | None = None


def _per_path(option: str, value: Any, default: tuple, levels: int, cast: type, scalar: tuple[type, ...]) -> tuple:
    """``value`` of option ``option`` as one entry per path ``(image path, level 1, ..., level L)``.

    ``None`` gives ``default``; one value of a ``scalar`` type is used on every path; a sequence must
    have ``levels + 1`` entries, each converted with ``cast``.
    """
    if value is None:
        return default
    if isinstance(value, scalar):
        return (cast(value),) * (levels + 1)
    values = tuple(cast(v) for v in value)
    if len(values) != levels + 1:
        raise IIAError(f"{option}= needs {levels + 1} values (image path + {levels} level(s)), got {list(value)}")
    return values


def resolve_steps(steps: int | Sequence[int] | None, preset: Preset, levels: int) -> tuple[int, ...]:
    """Step counts ``(n0, n1, ..., nL)``: from ``steps`` (one int for every path, or one per path) or the preset.

    ``0`` is the single point ``a = 1`` (no integral on that path); a negative count is an :class:`IIAError`.
    """
    counts = _per_path("steps", steps, (preset.input_steps, *([preset.level_steps] * levels)), levels, int, (int,))
    if any(count < 0 for count in counts):
        raise IIAError(f"steps= must be non-negative (0 = the single point a = 1), got {list(counts)}")
    return counts


def resolve_baselines(baselines: float | Sequence[float] | None, levels: int) -> tuple[float, ...]:
    """Constant baselines ``(b0, b1, ..., bL)``: ``None`` = all zero (the reference code's), one float for every
    path, or one per path, image path first (``b0`` in normalised pixel space)."""
    return _per_path("baselines", baselines, (0.0,) * (levels + 1), levels, float, (int, float))


def resolve_rule(name: str | None, preset: Preset) -> str:
    """The quadrature rule called ``name`` (``None`` = the preset's), one of :data:`hf_iia.engine.RULES`."""
    name = name or preset.rule
    if name not in RULES:
        raise IIAError(f"unknown rule {name!r}; choose one of {list(RULES)}")
    return name


def resolve_integrand(name: str | None, preset: Preset):
    """The integrand function called ``name`` (``None`` = the preset's)."""
    name = name or preset.integrand
    if name not in INTEGRANDS:
        raise IIAError(f"unknown integrand {name!r}; choose one of {sorted(INTEGRANDS)}")
    return INTEGRANDS[name]
