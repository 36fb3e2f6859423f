"""What a model family declares beside its adapter: its IIA settings (:class:`Preset`) and a :class:`Family`.

Plain records that import nothing of the package but its errors, so the adapters (which declare them), the
registry, the presets' resolvers and the engine can all refer to them without an import circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import IIAError


@dataclass(frozen=True)
class Preset:
    """IIA settings: ``steps`` of the image path and of each level, the integrand's name, interpolation on/off.

    ``detach_levels`` makes the interpolated level a constant (no gradient through it to earlier layers),
    as the authors' ViT code computes it. ``fusion`` names the rollout of an attention family's map
    (:data:`hf_iia.fusions.ROLLOUTS`); feature-map families form their map with ``combine=``
    (:data:`hf_iia.fusions.LEVEL_FUSIONS`) and leave it ``None``. ``levels`` is how many taps are
    interpolated when ``layer=`` is not given: the adapter's default tap and the ``levels - 1`` taps before it.
    ``grid_factor`` (feature maps, ``layer=`` not given): the level is instead the deepest tap in the second half
    of the network, up to the default one, whose map has at least ``grid_factor`` times the default's rows and
    columns at the processor's input size; ``0`` keeps the default tap. ``start`` names the image path's start
    (:data:`hf_iia.presets.STARTS`) used when neither ``start=`` nor ``baselines=`` is given, on models that take
    images ``[B, C, H, W]``; ``None``: the constant baseline 0.
    """

    input_steps: int
    level_steps: int
    integrand: str
    interpolate_levels: bool = True
    detach_levels: bool = False
    rule: str = "endpoints"  # quadrature rule of every path (hf_iia.engine.RULES)
    fusion: str | None = None
    levels: int = 1
    grid_factor: float = 0
    start: str | None = None


@dataclass(frozen=True)
class Family:
    """What one model family declares beside its adapter.

    Attributes:
        name: a short name shown in reports (``"cnn"``, ``"vit"``, ...).
        presets: the named IIA settings of the family (``"default"``, ``"reference"``, ...).
        comparison: the comparison method an audit runs next to IIA (``None``: none).
        description: one line saying what is integrated and how the map is formed.
    """

    name: str
    presets: Mapping[str, Preset] = field(default_factory=dict)
    comparison: str | None = None
    description: str = ""

    def preset(self, name: str | None) -> Preset:
        """The preset ``name`` (``None`` = ``"default"``)."""
        name = name or "default"
        if name not in self.presets:
            raise IIAError(f"unknown preset {name!r} for {self.name} models; choose one of {sorted(self.presets)}")
        return self.presets[name]
