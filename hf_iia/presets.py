"""Named presets: step counts, integrand and whether internal levels are interpolated, per model family.

``default`` is the true nested integral of ALGORITHM.md (image path + the adapter's
levels). ``reference`` reproduces the authors' published code: for CNNs its activation
path degenerates, so only the image path is integrated and the last stage is observed
without being interpolated; for ViTs it is the nested integral with 5 steps per path, the
interpolated last-block attention computed outside autograd (the authors' code builds it
through numpy), so earlier blocks' gradients do not flow through that block's q/k.
The CNN ``default`` integrand, ``relu_grad_act`` (``sum_k relu(dy/dA_k * A_k)``, the ViT term too), was
chosen by ``hf-iia bench`` and ``scripts/sweep_defaults.py`` (README, "Benchmark"): better than the
reference's ``grad_relu_act`` on the synthetic ConvNeXt and ResNet, no significant difference on the
real EfficientNet-Lite0. Steps and layers stay as they were (no setting tested was reliably better).
The ViT default (5 x 5 steps, last block, ``relu_grad_act``, zero baselines, right Riemann sums) was swept
on the synthetic ViT and DeiT: leaving out the ``a = 0`` points (``riemann_right``: the flat baseline image
and the all-zero attention, which carry no information about the input) raised the energy pointing game
by 0.025 / 0.054 at 25 instead of 36 points; on the CNNs it changed nothing, so they keep the reference's
``endpoints``. 10 x 10 steps or the last two blocks raise the energy pointing game by 0.015-0.026 and leave
DEL / INS unchanged, at 3.4x / 6x the cost, so they are options (``steps=10``, ``layer=[-2, -1]``), not
the default; ``grad_act`` is far worse; constant baselines other than zero gave no consistent gain
(README, "How the defaults were chosen").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .engine import RULES
from .errors import IIAError
from .integrands import INTEGRANDS


@dataclass(frozen=True)
class Preset:
    """Settings of one family: ``steps`` of the image path and of each level, the integrand's name, interpolation on/off."""

    input_steps: int
    level_steps: int
    integrand: str
    interpolate_levels: bool = True
    detach_levels: bool = False
    rule: str = "endpoints"  # quadrature rule of every path (hf_iia.engine.RULES)


PRESETS: dict[str, dict[str, Preset]] = {
    "default": {
        "cnn": Preset(input_steps=10, level_steps=10, integrand="relu_grad_act"),  # benchmark: README "Benchmark"
        "vit": Preset(input_steps=5, level_steps=5, integrand="relu_grad_act", rule="riemann_right"),
    },
    "reference": {
        "cnn": Preset(input_steps=10, level_steps=0, integrand="grad_relu_act", interpolate_levels=False),
        "vit": Preset(input_steps=5, level_steps=5, integrand="relu_grad_act", detach_levels=True),
    },
}


def get_preset(name: str | None, family: str) -> Preset:
    """The preset ``name`` (``None`` = ``"default"``) for ``family`` (``"cnn"`` or ``"vit"``)."""
    name = name or "default"
    if name not in PRESETS:
        raise IIAError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name][family]


def _per_path(option: str, value: object, default: tuple, levels: int, cast: type, scalar: tuple[type, ...]) -> tuple:
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
    """Step counts ``(n0, n1, ..., nL)``: from ``steps`` (one int for every path, or one per path) or the preset."""
    return _per_path("steps", steps, (preset.input_steps, *([preset.level_steps] * levels)), levels, int, (int,))


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
