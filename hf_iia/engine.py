"""The iterated Riemann integral of IIA (ALGORITHM.md), generic over a chain of levels.

The integral nests one straight-line path per level: the image path
``x(a0) = x' + a0 (x - x')`` (``x'`` a constant, or one start per image: ``IntegralSpec.start``) and, for every internal level ``l`` (a *tap* of the adapter),
``r_l(a0..al) = r_l' + al (h_l(...) - r_l')``. Each path is discretised by a quadrature
rule (:data:`RULES`); the default, ``"endpoints"``, takes ``steps + 1`` evenly spaced
points including both ends with equal weights, as the reference code does
(``steps = 0`` means the single point ``a = 1``). The integral is the weighted mean of the
integrand over the grid, each point weighted by the product of its paths' weights.

Points whose contribution is zero by construction are not computed (they still count in the
mean's total weight): where every observed tap is a level at ``a = 0`` with baseline 0, so its
representation is exactly zero, and the integrand vanishes there
(:data:`~hf_iia.integrands.VANISHING_AT_ZERO`). See :meth:`IntegralSpec.vanishing_points`.

All points of a batch form one grid of rows ``(image b, i0, i1, ..., iL)``. The grid is
evaluated in chunks of at most ``internal_batch_size`` full points; inside a chunk each
part of the network runs once per distinct *prefix* of the row: the prefix up to the
first tap once per image point ``(b, i0)``, the part between tap ``l`` and ``l+1`` once
per ``(b, i0..il)``. Rows are repeated (``expand``) exactly where the grid needs them.

The input itself can be observed under the tap name :data:`INPUT_TAP` (for input-space
methods such as Integrated Gradients), when there are no internal levels.

Several targets share the grid: with ``K`` targets per image (``targets [B, K]``) every point runs forward once and
backward ``K`` times (one gradient per target, the graph kept between them), so the maps of ``K`` classes cost one
forward and ``K`` backward passes per point instead of ``K`` of each. A callable target (:data:`TargetFunction`)
replaces the target logit by any differentiable scalar of the logits.

This module knows nothing about model families: it talks to an
:class:`~hf_iia.adapters.base.Adapter` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

import torch
from tqdm.auto import tqdm

from .errors import LayerNotFoundError, NumericalError, TargetError
from .integrands import VANISHING_AT_ZERO

if TYPE_CHECKING:
    from .adapters.base import Adapter
    from .integrands import Integrand

INPUT_TAP = "pixel_values"


RULES = ("endpoints", "riemann_right", "trapezoid")

Contrast = Literal["mean", "max", "log_softmax"] | None
"""What the methods differentiate for class ``c``: ``None``, the logit ``z_c``; ``"mean"``, ``z_c`` minus the mean of
the other logits; ``"max"``, ``z_c`` minus the largest other logit; ``"log_softmax"``, the log-probability
``z_c - logsumexp(z)`` (:func:`target_score`)."""

CONTRASTS: tuple[Contrast, ...] = (None, "mean", "max", "log_softmax")


def check_contrast(contrast: object) -> Contrast:
    """``contrast`` if it is one of :data:`CONTRASTS`; else a :class:`~hf_iia.errors.TargetError` naming them."""
    if contrast not in CONTRASTS:
        raise TargetError(f"unknown contrast {contrast!r}; choose one of {CONTRASTS} (None: the target's logit)")
    return cast(Contrast, contrast)


def target_score(logits: torch.Tensor, targets: torch.Tensor, contrast: Contrast = None) -> torch.Tensor:
    """The scalar explained for each row: ``[N]`` from ``logits`` ``[N, K]`` and ``targets`` ``[N]`` (on the logits'
    device), differentiable; see :data:`Contrast`.

    A contrastive score subtracts what the other classes share, so a map of it shows what tells ``c`` apart from
    them rather than what raises every logit together (the object any class map then points at).

    Raises:
        TargetError: ``contrast`` is not one of :data:`CONTRASTS`, or it is given for a model with one logit (there is
            no other class to contrast with).
    """
    check_contrast(contrast)
    own = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    if contrast is None:
        return own
    if logits.shape[1] < 2:
        raise TargetError(f"contrast={contrast!r} needs at least two classes, the model has {logits.shape[1]} logit")
    if contrast == "log_softmax":
        return own - logits.logsumexp(dim=1)
    others = logits.scatter(1, targets.unsqueeze(1), float("-inf") if contrast == "max" else 0.0)
    if contrast == "max":
        return own - others.max(dim=1).values
    return own - others.sum(dim=1) / (logits.shape[1] - 1)


TargetFunction = Callable[[torch.Tensor], torch.Tensor]
"""A custom explained scalar: the logits ``[1, K]`` of one input -> ``[1]`` (or ``[]``), differentiable (e.g. a sum
of classes, a margin). The engine applies it to each row of logits alone, so the value of an image never depends
on what else is in its batch."""

EngineTargets = torch.Tensor | TargetFunction
"""What :func:`integrate` explains: ``[B]`` int64 classes (``-1``: the top-1), ``[B, K]`` int64 (``K`` targets per
image; ``-r``: the ``r``-th best class of the image's logits, so ``-1`` is still the top-1), or a
:data:`TargetFunction`."""

Start = Callable[[torch.Tensor], torch.Tensor]
"""The image path's start as a function of the images: ``pixel_values [B, C, H, W] -> baselines [B, C, H, W]``."""


@dataclass(frozen=True)
class Path:
    """One straight-line path from the value (``a = 1``) to a constant baseline (``a = 0``).

    ``rule`` places the points and weighs them (``n = steps``):

    - ``"endpoints"``: ``n + 1`` points ``1, (n-1)/n, ..., 0``, equal weights (the reference code);
    - ``"riemann_right"``: ``n`` points ``1, (n-1)/n, ..., 1/n``, equal weights (IG's right Riemann sum);
    - ``"trapezoid"``: the ``n + 1`` points of ``"endpoints"``, the two ends weighted by one half.

    ``steps = 0`` is the single point ``a = 1`` under every rule.
    """

    steps: int
    baseline: float = 0.0
    rule: str = "endpoints"
    detach: bool = False  # the interpolated value is a constant: no gradient flows through it to earlier layers

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {self.steps!r}")
        if self.rule not in RULES:
            raise ValueError(f"unknown quadrature rule {self.rule!r}; choose one of {RULES}")

    @property
    def points(self) -> int:
        """How many points the path has."""
        if self.rule == "riemann_right" and self.steps > 0:
            return self.steps  # a = 0 is left out
        return self.steps + 1

    def alphas(self) -> torch.Tensor:
        """``[points]`` float64, descending, so the first point of every path is the unmodified value."""
        return torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64)[: self.points]

    def weights(self) -> torch.Tensor:
        """``[points]`` float64 relative weights of the points (only their ratios matter)."""
        weights = torch.ones(self.points, dtype=torch.float64)
        if self.rule == "trapezoid" and self.steps > 0:
            weights[[0, -1]] = 0.5
        return weights


@dataclass(frozen=True)
class IntegralSpec:
    """What to integrate.

    Attributes:
        input_path: the image path (level 0).
        levels: ``(tap, path)`` for each internal level, in forward order (may be empty).
        observe: taps whose ``(representation, gradient)`` the integrand reads.
        integrand: ``q(r, g) -> contribution``, see :mod:`hf_iia.integrands`.
        start: the image path's start per image (e.g. a blur of each image); ``None``: the constant
            ``input_path.baseline``.
        contrast: the scalar differentiated for the target (:data:`Contrast`; ``None``: its logit).
    """

    input_path: Path
    levels: tuple[tuple[str, Path], ...]
    observe: tuple[str, ...]
    integrand: Integrand
    start: Start | None = None
    contrast: Contrast = None

    def image_baseline(self, pixel_values: torch.Tensor) -> float | torch.Tensor:
        """Where the image path of ``pixel_values`` ``[B, C, H, W]`` starts: ``[B, C, H, W]`` from :attr:`start`,
        else the constant ``input_path.baseline``."""
        if self.start is None:
            return self.input_path.baseline
        baseline = self.start(pixel_values)
        if baseline.shape != pixel_values.shape:
            raise ValueError(f"the start gave {list(baseline.shape)} for images {list(pixel_values.shape)}")
        return baseline

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.input_path, *(path for _, path in self.levels))

    @property
    def points_per_image(self) -> int:
        count = 1
        for path in self.paths:
            count *= path.points
        return count

    def vanishing_points(self) -> torch.Tensor:
        """``[points_per_image]`` bool over one image's grid rows ``(i0, ..., iL)`` (lexicographic, as the engine's
        grid): the points whose contribution is zero by construction, which the engine does not compute.

        A point vanishes when the integrand is one of :data:`~hf_iia.integrands.VANISHING_AT_ZERO` and every observed
        representation is exactly zero there: the tap is an internal level whose path has baseline 0 and ``a = 0`` at
        the point (``r = 0 + 0 * (h - 0)``), or the input on a path from the constant 0. Decided from the spec alone,
        never from computed values: this is what lets half precision skip the zero level, where the gradient can
        overflow (e.g. a LayerNorm head at an all-zero feature map), without hiding a non-finite gradient anywhere
        else. Any other observed tap makes the point count: a level with a nonzero baseline, or a level earlier than
        the one at ``a = 0`` (its value there depends on the outer paths, e.g. the image point).
        """
        grid = torch.cartesian_prod(*[torch.arange(path.points) for path in self.paths]).reshape(-1, len(self.paths))
        vanishing = torch.full((grid.shape[0],), bool(self.observe) and self.integrand in VANISHING_AT_ZERO)
        zero_columns = {tap: column for column, (tap, path) in enumerate(self.levels, start=1) if path.baseline == 0}
        if self.start is None and self.input_path.baseline == 0:
            zero_columns[INPUT_TAP] = 0
        for tap in self.observe:
            column = zero_columns.get(tap)
            if column is None:
                return torch.zeros_like(vanishing)
            vanishing &= self.paths[column].alphas()[grid[:, column]] == 0
        return vanishing

    @property
    def evaluated_points_per_image(self) -> int:
        """How many of :attr:`points_per_image` the engine computes (the others vanish: :meth:`vanishing_points`)."""
        return int((~self.vanishing_points()).sum())

    @property
    def total_weight(self) -> float:
        """Sum of the point weights over one image's grid (the product of the paths' weight sums)."""
        total = 1.0
        for path in self.paths:
            total *= float(path.weights().sum())
        return total

    def row_weights(self, rows: torch.Tensor) -> torch.Tensor:
        """``[N]`` float64 weight of each grid row ``(b, i0, ..., iL)`` of ``rows`` ``[N, L + 2]``."""
        weights = torch.ones(rows.shape[0], dtype=torch.float64)
        for column, path in enumerate(self.paths, start=1):
            weights *= path.weights()[rows[:, column]]
        return weights


@dataclass
class IntegrationResult:
    """Output of :func:`integrate`.

    Attributes:
        integrals: ``{tap: [B, ...]}`` float32, the weighted mean of the integrand over all points (``[B, K, ...]``
            for ``K`` targets per image).
        logits: ``[B, num_classes]`` float32, the model's logits on the unmodified input.
        targets: ``[B]`` int64, the explained class of each image (``[B, K]`` for ``K`` targets per image; ``-1``
            for a callable target).
    """

    integrals: dict[str, torch.Tensor]
    logits: torch.Tensor
    targets: torch.Tensor


def target_scalars(
    logits: torch.Tensor, targets: torch.Tensor | TargetFunction, contrast: Contrast = None
) -> torch.Tensor:
    """The explained scalars of ``N`` rows: ``[N, K]`` from ``logits`` ``[N, C]`` and ``targets`` ``[N, K]`` int64
    class indices (on the logits' device; :func:`target_score` of each column under ``contrast``), or ``[N, 1]`` from a
    :data:`TargetFunction` applied to each row ``[1, C]`` alone.

    Raises:
        TargetError: the function fails, or does not return one floating-point value per row; a contrast is given
            with a function (the function defines the whole scalar).
    """
    if isinstance(targets, torch.Tensor):
        if contrast is None:
            return logits.gather(1, targets)
        return torch.stack([target_score(logits, column, contrast) for column in targets.unbind(1)], dim=1)
    if contrast is not None:
        raise TargetError(
            f"contrast={contrast!r} applies to class targets; a target function defines the whole explained scalar, "
            "so build the contrast into it (e.g. lambda logits: logits[:, 3] - logits.mean(dim=1))"
        )
    values = []
    for row in logits.split(1):
        try:
            value = targets(row)
        except Exception as error:  # the user's function: say which call failed and how it is called
            raise TargetError(
                f"the target function {_function_name(targets)} failed on logits of shape [1, {logits.shape[1]}] "
                f"({type(error).__name__}: {error}); it takes one input's logits [1, num_classes] and returns [1]"
            ) from error
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
            shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise TargetError(
                f"the target function {_function_name(targets)} returned {shape} for logits [1, {logits.shape[1]}]; "
                "it must return one floating-point value per input (shape [1]), e.g. lambda logits: logits[:, 3]"
            )
        values.append(value.reshape(1))
    return torch.stack(values)


def _function_name(function: TargetFunction) -> str:
    """``function``'s ``__name__`` (``"<lambda>"`` for a lambda), what an explanation of it is labelled by."""
    return str(getattr(function, "__name__", type(function).__name__))


def _resolve_ranks(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``targets`` ``[n, K]`` with every ``-r`` replaced by the ``r``-th best class of ``logits`` ``[n, C]`` (ties: the
    lower index first, as ``argmax``).

    Raises:
        TargetError: a rank beyond the number of classes.
    """
    ranked = targets < 0
    if not ranked.any():
        return targets
    deepest = int(-targets.min())
    if deepest > logits.shape[1]:
        raise TargetError(
            f"asked for the class ranked {deepest} but the model has {logits.shape[1]} classes; ask for at most "
            f"top_k={logits.shape[1]}"
        )
    order = logits.argsort(dim=1, descending=True, stable=True)
    return torch.where(ranked, order.gather(1, (-targets - 1).clamp_min(0)), targets)


def _grid(batch: int, spec: IntegralSpec) -> torch.Tensor:
    """The integration points to compute as rows ``(b, i0, ..., iL)``, ``[B * E, L + 2]`` int64, lexicographic
    (``E = spec.evaluated_points_per_image``: the vanishing points are left out)."""
    ranges = [torch.arange(batch)] + [torch.arange(path.points) for path in spec.paths]
    grid = torch.cartesian_prod(*ranges).reshape(-1, len(ranges))
    return grid[~spec.vanishing_points().repeat(batch)]


def _chunks(total: int, points_per_image_point: int, internal_batch_size: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of at most ``internal_batch_size`` rows, aligned to whole image points when possible, as
    even as the alignment allows: as few passes as the bound allows, and each no larger than their share (so the
    peak memory is that of ``total / passes`` rows, not of the bound, and no pass is left with a few rows)."""
    unit = points_per_image_point if internal_batch_size >= points_per_image_point else 1
    bound = internal_batch_size - internal_batch_size % unit
    passes = -(-total // bound) if total else 0
    share = -(-total // passes) if passes else 1
    size = -(-share // unit) * unit  # at most bound: bound is a multiple of unit and share <= bound
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _required_depths(adapter: Adapter, spec: IntegralSpec) -> dict[str, int]:
    """Grid depth each active tap must reach: a level's own index, the full depth where observed; monotone in forward order."""
    full = len(spec.levels)
    need = {tap: index + 1 for index, (tap, _) in enumerate(spec.levels)}
    for tap in spec.observe:
        if tap != INPUT_TAP:
            need[tap] = full
    depths, depth = {}, 0
    for tap in adapter.taps:
        depth = max(depth, need.get(tap, 0))
        depths[tap] = depth
    missing = set(need) - set(depths)
    if missing:
        raise LayerNotFoundError(
            f"taps {sorted(missing)} are not known to the adapter; known taps: {list(adapter.taps)}"
        )
    return depths


@dataclass
class _ChunkRun:
    """One chunk's forward pass: implements the adapter-facing :class:`TapRun`."""

    rows: torch.Tensor  # [N, L + 2] grid rows of this chunk
    spec: IntegralSpec
    baseline: float | torch.Tensor  # the image path's start: a constant, or [B, C, H, W] one per image
    span: torch.Tensor  # [B, C, H, W] the image path's direction, pixel_values - baseline (once per batch)
    depths: dict[str, int]
    device: torch.device
    depth: int = 0  # the grid depth of the rows entering the model: the full depth when every row runs from the input
    grad_started: bool = False
    observed: dict[str, torch.Tensor] = field(default_factory=dict)
    level_order: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # inverse[d][k]: index of row k's prefix (b, i0..id) among the chunk's distinct depth-d prefixes
        self.inverse = [
            torch.unique_consecutive(self.rows[:, : d + 2], dim=0, return_inverse=True)[1]
            for d in range(len(self.spec.levels) + 1)
        ]
        self.levels = {tap: index + 1 for index, (tap, _) in enumerate(self.spec.levels)}
        self.input_depth = self.depth

    def prefix_rows(self, depth: int) -> torch.Tensor:
        """Indices into ``rows`` of the first row of each distinct depth-``depth`` prefix."""
        inverse = self.inverse[depth]
        starts = torch.ones_like(inverse, dtype=torch.bool)
        starts[1:] = inverse[1:] != inverse[:-1]
        return starts.nonzero().squeeze(1)

    def row_images(self) -> torch.Tensor:
        """``[N0]`` int64 (CPU) the image of each row :meth:`input_points` gives the model."""
        return self.rows[self.prefix_rows(self.input_depth), 0]

    def input_points(self) -> torch.Tensor:
        """The image-path points of this chunk, ``[N0, C, H, W]``: one per distinct image point, or one per grid row
        when the run starts at the full depth (:attr:`Adapter.rows_from_input`)."""
        first = self.rows[self.prefix_rows(self.input_depth)]
        alpha = self.spec.input_path.alphas()[first[:, 1]].to(self.device, self.span.dtype)
        alpha = alpha.view(-1, *([1] * (self.span.dim() - 1)))
        image_index = first[:, 0].to(self.device)
        # one [N0, C, H, W] tensor per chunk, scaled in place: on CPU every fresh large tensor costs page faults
        points = self.span.index_select(0, image_index).mul_(alpha)
        if isinstance(self.baseline, torch.Tensor):
            return points.add_(self.baseline.index_select(0, image_index))
        return points.add_(self.baseline) if self.baseline else points

    def expand(self, tap: str, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.grad_started:
            # Nothing before the first tap needs gradients: the prefix ran without a graph.
            torch.set_grad_enabled(True)
            self.grad_started = True
            tensors = tuple(t.detach() for t in tensors)
        target = self.depths.get(tap, 0)
        if target > self.depth:
            index = self.inverse[self.depth][self.prefix_rows(target)].to(self.device)
            tensors = tuple(t.index_select(0, index) for t in tensors)
            self.depth = target
        return tensors

    def represent(self, tap: str, rep: torch.Tensor) -> torch.Tensor:
        if tap in self.observed:
            raise LayerNotFoundError(f"tap {tap!r} ran twice in one forward pass; explain a layer that runs once")
        level = self.levels.get(tap)
        if level is not None:
            if self.level_order and level <= self.level_order[-1]:
                raise LayerNotFoundError(
                    f"layers ran out of order at {tap!r}; list layers in the order the model runs them"
                )
            self.level_order.append(level)
            path = self.spec.levels[level - 1][1]
            index = self.rows[self.prefix_rows(self.depth), level + 1]
            alpha = path.alphas()[index].to(self.device, rep.dtype).view(-1, *([1] * (rep.dim() - 1)))
            rep = path.baseline + alpha * ((rep.detach() if path.detach else rep) - path.baseline)
        if not rep.requires_grad:
            rep = rep.detach().requires_grad_()
        if tap in self.spec.observe:
            self.observed[tap] = rep
        return rep


@torch.inference_mode(False)
@torch.enable_grad()  # the backward pass needs autograd even when the caller runs under no_grad/inference_mode
def integrate(
    adapter: Adapter,
    pixel_values: torch.Tensor,
    targets: EngineTargets,
    spec: IntegralSpec,
    *,
    internal_batch_size: int = 64,
    progress: bool = True,
) -> IntegrationResult:
    """Evaluate the iterated integral for a batch.

    Args:
        adapter: reaches the taps of the model.
        pixel_values: ``[B, C, H, W]`` preprocessed inputs on the model's device and dtype.
        targets: ``[B]`` int64 class indices; ``-1`` means the top-1 class (found from the
            first point of each image's grid, which is the unmodified input). ``[B, K]``: ``K`` targets per image,
            ``-r`` the ``r``-th best class, sharing every forward pass. Or a :data:`TargetFunction`.
        spec: the paths, taps and integrand.
        internal_batch_size: most integration points evaluated in one forward/backward pass.
        progress: show a progress bar when the run takes longer than a second.

    Returns:
        An :class:`IntegrationResult` with the integrand's weighted mean over the points.

    Raises:
        TargetError: a class or rank out of range, or a target function that fails or returns no value per row.
    """
    batch, device = pixel_values.shape[0], pixel_values.device
    depths = _required_depths(adapter, spec)
    active = tuple(tap for tap in dict.fromkeys([*(t for t, _ in spec.levels), *spec.observe]) if tap != INPUT_TAP)
    grid = _grid(batch, spec)
    baseline = spec.image_baseline(pixel_values)
    if isinstance(baseline, torch.Tensor):
        baseline = baseline.to(device, pixel_values.dtype)
    span = (pixel_values - baseline).detach()
    # rows per image point, for aligning the chunks: those of the first (b = 0, a0 = 1); which points vanish depends
    # on the level columns only, so every image point keeps as many
    per_image_point = int((grid[:, 0] == 0).logical_and(grid[:, 1] == 0).sum()) if batch else 1
    function = None if isinstance(targets, torch.Tensor) else targets
    matrix = targets.clone().cpu() if isinstance(targets, torch.Tensor) else torch.full((batch, 1), -1)
    several = function is None and matrix.dim() == 2
    matrix = matrix if matrix.dim() == 2 else matrix.unsqueeze(1)  # [B, K]: one column per target
    count = matrix.shape[1]
    if count == 0:
        raise TargetError("no targets to explain (targets of shape [B, 0]); give at least one target per image")
    sums: dict[str, torch.Tensor] = {}
    input_logits: torch.Tensor | None = None
    chunks = _chunks(grid.shape[0], per_image_point, max(1, internal_batch_size))
    # Sums in float64 (where the device has it): the chunks' order of addition then cannot change the float32 result,
    # so a map does not depend on internal_batch_size or on the image's place in the batch.
    accumulate = torch.float32 if device.type == "mps" else torch.float64
    for start, stop in tqdm(chunks, desc="IIA", unit="chunk", delay=1.0, disable=not progress or len(chunks) < 2):
        # An adapter whose model reads per-image inputs after its taps (NaFlex masks) gets every row from the input.
        run = _ChunkRun(
            grid[start:stop], spec, baseline, span, depths, device, depth=len(spec.levels) * adapter.rows_from_input
        )
        with torch.no_grad(), adapter.installed(run, active):
            points = run.input_points()
            if INPUT_TAP in spec.observe:
                (points,) = run.expand(INPUT_TAP, points)
                points = run.represent(INPUT_TAP, points)
            logits = adapter.logits(points)
        unreached = [tap for tap in spec.observe if tap not in run.observed]
        if unreached or logits.shape[0] != run.rows.shape[0]:
            raise adapter.not_reached(unreached or [tap for tap, _ in spec.levels])
        if not torch.isfinite(logits).all():
            raise NumericalError(
                "the model produced non-finite logits (NaN or inf) for this input; no faithful map exists"
                + _half_precision_hint(pixel_values.dtype)
            )
        first = (run.rows[:, 1:] == 0).all(dim=1).nonzero().squeeze(1)  # rows at the unmodified input
        if input_logits is None:
            input_logits = torch.empty(batch, logits.shape[1], dtype=torch.float32)
        image_of_first = run.rows[first, 0]
        input_logits[image_of_first] = logits[first.to(device)].detach().float().cpu()
        if function is None:
            matrix[image_of_first] = _resolve_ranks(matrix[image_of_first], input_logits[image_of_first])
            if (matrix >= logits.shape[1]).any():
                raise TargetError(
                    f"target out of range: the model has {logits.shape[1]} classes (valid indices 0.."
                    f"{logits.shape[1] - 1})"
                )
        scalars = target_scalars(logits, function or matrix[run.rows[:, 0]].to(device), spec.contrast)  # [N, K]
        if function is not None and not scalars.requires_grad:
            raise TargetError(
                f"the target function {_function_name(function)} returned a value that does not "
                "depend on the logits through differentiable operations (e.g. argmax or .item()); return a "
                "differentiable scalar of them, e.g. lambda logits: logits[:, 3] - logits[:, 5]"
            )
        taps = list(run.observed)
        image_index = run.rows[:, 0].to(device)
        row_weights = spec.row_weights(run.rows).to(device, accumulate)
        for column in range(count):
            # One backward per target over the same forward: the graph is kept until the last target's.
            grads = torch.autograd.grad(
                scalars[:, column].sum(),
                [run.observed[tap] for tap in taps],
                allow_unused=True,
                retain_graph=column < count - 1,
            )
            for tap, grad in zip(taps, grads, strict=True):
                rep = run.observed[tap].detach()
                grad = torch.zeros_like(rep) if grad is None else grad
                # one fresh tensor (copy=True: never scale the integrand's input, which it may return, in place)
                contribution = spec.integrand(rep.float(), grad.float()).to(accumulate, copy=True)
                contribution.mul_(row_weights.view(-1, *([1] * (contribution.dim() - 1))))
                if tap not in sums:
                    sums[tap] = torch.zeros(batch * count, *contribution.shape[1:], dtype=accumulate, device=device)
                sums[tap].index_add_(0, image_index * count + column, contribution)
                del rep, grad, contribution
        # the chunk's tensors go before the next forward, whose memory can then reuse theirs
        del run, points, logits, scalars, grads
    if input_logits is None:  # empty batch
        input_logits = torch.empty(0, 0)
    shape = (batch, count) if several else (batch,)
    integrals = {tap: (total / spec.total_weight).float().view(*shape, *total.shape[1:]) for tap, total in sums.items()}
    non_finite = [tap for tap, total in integrals.items() if not torch.isfinite(total).all()]
    if non_finite:
        raise NumericalError(
            f"the gradients at {non_finite} are not finite (NaN or inf), e.g. from sqrt or division at zero in the "
            "model; no faithful map exists" + _half_precision_hint(pixel_values.dtype)
        )
    return IntegrationResult(integrals=integrals, logits=input_logits, targets=matrix if several else matrix[:, 0])


def _half_precision_hint(dtype: torch.dtype) -> str:
    """In float16 / bfloat16 the path's a = 0 point (the flat baseline image, zero activations) is where overflow and
    0/0 in normalisation layers happen: say how to avoid it."""
    if dtype not in (torch.float16, torch.bfloat16):
        return ""
    return (
        f" (the model runs in {dtype}: the a = 0 points of the paths are the usual cause; pass rule='riemann_right', "
        "which leaves them out, or run the model in float32)"
    )


def make_spec(
    levels: Sequence[str],
    observe: Sequence[str],
    steps: Sequence[int],
    integrand: Integrand,
    baselines: Sequence[float] | None = None,
    rules: Sequence[str] | None = None,
    detach_levels: bool = False,
    start: Start | None = None,
) -> IntegralSpec:
    """Build an :class:`IntegralSpec` from per-path step counts ``steps = (n0, n1, ..., nL)``.

    ``baselines`` and ``rules`` (see :class:`Path`) are per path too; default: ``0.0`` and ``"endpoints"``.
    ``detach_levels`` makes every internal level's interpolated value a constant (see ``Path.detach``).
    ``start`` replaces the image path's constant baseline by one computed from each image (:data:`Start`).
    """
    if len(steps) != len(levels) + 1:
        raise ValueError(f"need {len(levels) + 1} step counts (image path + {len(levels)} levels), got {list(steps)}")
    if INPUT_TAP in observe and levels:
        raise ValueError(f"observing {INPUT_TAP!r} needs a single-path integral (no internal levels)")
    baselines = list(baselines) if baselines is not None else [0.0] * len(steps)
    rules = list(rules) if rules is not None else ["endpoints"] * len(steps)
    paths = [
        Path(int(n), float(b), rule, detach=detach_levels and index > 0)
        for index, (n, b, rule) in enumerate(zip(steps, baselines, rules, strict=True))
    ]
    return IntegralSpec(
        input_path=paths[0],
        levels=tuple(zip(levels, paths[1:], strict=True)),
        observe=tuple(observe),
        integrand=integrand,
        start=start,
    )
