"""``IIAExplainer``: images in, IIA maps out — one ``preprocess -> forward -> postprocess`` flow.

Nothing here is model-specific: the adapter (chosen by ``config.model_type``) reaches the
representations, the engine integrates, and this module turns images into
``pixel_values`` and integrals into normalised maps and :class:`Explanation` objects.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import nn

from .adapters.base import FeatureMapAdapter, LayerSpec, evaluation_mode
from .adapters.guard import Installation, acquire, protected
from .adapters.registry import Family
from .errors import GeometryError, IIAError, ImageInputError, TargetError, UnsupportedModelError
from .imaging import Geometry, ImageLike, probe_geometry, process, to_rgb
from .labels import class_index, label_index
from .loading import check_device, load_model, load_processor
from .methods import METHODS, MethodOptions, input_size, prepare
from .presets import finest_default
from .scores import apply_score_function, score_function, scores
from .viz import overlay as draw_overlay
from .zeroshot import candidates, from_pipeline, zero_shot_classifier, zero_shot_type

Target = int | str | None
Targets = Target | Sequence[int | str] | torch.Tensor | np.ndarray

DEFAULT_INTERNAL_BATCH_SIZE = 64


@dataclass
class Explanation:
    """One image's explanation.

    Attributes:
        heatmap: ``[H, W]`` float32 in ``[0, 1]`` at the model's input resolution.
        target: the explained class index (the top-1 by default: the largest logit; a one-logit model's only
            class, 0).
        label: its ``id2label`` name (``None`` if the model has no labels).
        score: the model's score of ``target`` on the image, as transformers' image-classification pipeline
            reports it: ``score_function`` applied to the logits.
        image: the original RGB image (``None`` when the input was a pixel_values tensor).
        geometry: how the processor mapped ``image`` onto the model input (``None`` if it could not be established:
            then :meth:`overlay` draws on the model input and says why in :attr:`overlay_note`).
        pixel_values: ``[C, H, W]`` the model input that was explained.
        score_function: how ``score`` came from the logits (:func:`hf_iia.scores.score_function`): ``"softmax"``
            (single-label heads), ``"sigmoid"`` (multi-label and one-logit heads) or ``"none"`` (regression: the
            logit).
        zero_level: for a signed method (IG, AttnLRP: :attr:`hf_iia.methods.Method.signed`), the value in
            ``heatmap`` where the raw map is 0 (outside ``[0, 1]`` when the raw map has one sign); ``None`` for the
            unsigned methods, whose maps are read min-max normalised.
    """

    heatmap: np.ndarray
    target: int
    label: str | None
    score: float
    image: Image.Image | None = None
    geometry: Geometry | None = None
    pixel_values: torch.Tensor | None = None
    score_function: str = "softmax"
    zero_level: float | None = None

    @property
    def overlay_note(self) -> str | None:
        """Why :meth:`overlay` draws on the model input instead of the original image; ``None`` when it does not."""
        if self.image is None or self.geometry is not None:
            return None
        return (
            f"the image processor's resize/crop/pad of this {self.image.width}x{self.image.height} image could not be "
            "established from its outputs (hf_iia.imaging.probe_geometry), so the map is drawn on the model input "
            "(the processed image) rather than stretched over the photo"
        )

    def heatmap_on_image(self) -> np.ndarray:
        """The map resampled onto the original image, ``[H0, W0]``; NaN where the model input did not see it.

        Without an image (a ``pixel_values`` input) this is :attr:`heatmap`. Raises :class:`GeometryError` when the
        processor's geometry is unknown (see :attr:`overlay_note`): a stretched map would point at the wrong pixels.
        """
        if self.image is None:
            return self.heatmap
        if self.geometry is None:
            raise GeometryError(
                f"{self.overlay_note}; use explanation.heatmap with explanation.pixel_values (both at the model "
                "input's resolution), or explanation.overlay(), which draws on the model input"
            )
        return self.geometry.to_original(self.heatmap)

    def canvas(self) -> tuple[Image.Image, np.ndarray]:
        """What the map is drawn on: ``(image, map on it [H, W])``. The original image with
        :meth:`heatmap_on_image` when the processor's geometry is known; else the model input (min-max scaled
        ``pixel_values``, its first three channels in the processor's order) with :attr:`heatmap` as it is, and
        :attr:`overlay_note` says why."""
        if self.image is not None and self.geometry is not None:
            return self.image, self.heatmap_on_image()
        assert self.pixel_values is not None
        view = self.pixel_values.float()
        view = (view - view.min()) / (view.max() - view.min()).clamp_min(1e-12)
        base = Image.fromarray((view.permute(1, 2, 0).numpy() * 255).astype(np.uint8)[..., :3].squeeze())
        return base.convert("RGB"), self.heatmap

    def overlay(self, *, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
        """The map over the original image (resize/crop undone), as a PIL image.

        Over the model input instead (see :meth:`canvas`) when there is no original image, or when the
        processor's geometry is unknown: then with a ``UserWarning`` giving :attr:`overlay_note`.
        """
        if self.overlay_note is not None:
            warnings.warn(self.overlay_note, UserWarning, stacklevel=2)
        image, heatmap = self.canvas()
        return draw_overlay(image, heatmap, alpha=alpha, colormap=colormap)


class IIAExplainer:
    """Iterated Integrated Attributions for an image classifier.

    Args:
        model: a Hub id or local checkpoint folder (loaded with
            ``AutoModelForImageClassification``), a ``PreTrainedModel``, or any
            ``nn.Module`` returning logits (then ``layer=`` is required), or a transformers image-classification
            or zero-shot ``Pipeline`` (its model, processor and device).
        processor: turns images into ``pixel_values``: a transformers image processor or
            any callable ``images -> tensor | {"pixel_values": tensor}``. Loaded with the
            model when ``model`` is a path or id.
        layer: the representation(s) to integrate over: a module, its dotted name or a
            stage/block index, or a list of them in forward order (multi-layer IIA).
            Defaults to the last stage (CNNs) or the last block's attention (ViTs).
        method: the attribution method, ``"iia"`` or a comparison method run through the same
            code path: ``"ig"``, ``"gradcam"``, ``"gradcam++"``, ``"layercam"``, ``"scorecam"``,
            ``"attention_rollout"``, ``"gradient_rollout"``, ``"gae"``, ``"attnlrp"`` (see :mod:`hf_iia.methods`).
        preset: ``"default"`` (the nested integral), ``"reference"`` (the authors' code) or ``"iia3"`` (the
            paper's IIA3: without ``layer=``, the nested integral over the image and the last two stages or blocks).
        steps: steps per path: one int for all, or ``(n0, n1, ...)`` image path first; for
            ``method="ig"`` the number of steps (default 50).
        device: where the model runs; ``None`` keeps a given model where it is and puts a
            loaded one on the best device Accelerate finds.
        dtype: cast the model (e.g. ``torch.bfloat16`` on GPU); maps are always float32.
        internal_batch_size: most integration points per forward/backward pass.
        integrand: name of an integrand in :data:`hf_iia.integrands.INTEGRANDS`.
        baselines: IIA's constant path baselines: one float for every path, or ``(b0, b1, ...)``
            image path first (``b0`` in normalised pixel space: 0 is the processor's mean colour).
            Default: all zero, as the reference code.
        rule: IIA's quadrature rule on every path (:data:`hf_iia.engine.RULES`): ``"endpoints"``
            (``a = 0, 1/n, ..., 1``, the reference code's; the CNN default) or ``"riemann_right"``
            (``a = 1/n, ..., 1``; the ViT default) or ``"trapezoid"``.
        fusion: the rollout of an attention model's IIA map (:data:`hf_iia.fusions.ROLLOUTS`):
            ``"gradient_rollout"`` (the published rule) or ``"normalised_gradient_rollout"`` (the same with each
            block's term scaled to mean row sum 1, so the map does not depend on the logits' scale).
        combine: where a feature-map model's IIA map is formed when several levels are interpolated
            (:data:`hf_iia.fusions.LEVEL_FUSIONS`): ``"deepest"`` (the default: the channel sum at the deepest level),
            ``"earliest"`` (the integrand read at the earliest level: a finer grid), ``"product"`` or ``"sum"``
            (every level's channel sum on the finest grid, min-max normalised, multiplied or averaged).
        start: a named start of the image path for ``iia`` and ``ig`` (:data:`hf_iia.presets.STARTS`) instead of
            ``baselines=``: ``"mean"`` (0 in normalised space, the default), ``"black"`` (the processor's output for a
            black image) or ``"blur"`` (each image Gaussian-blurred).
        trust_remote_code: passed to ``from_pretrained``; off unless you trust the repo.
        allow_pickle: allow loading pickle (``.bin``) weights; off by default.
        progress: show a progress bar on runs longer than a second.
        candidate_labels: explain a zero-shot model (``AutoModelForZeroShotImageClassification``: CLIP, SigLIP,
            MetaCLIP 2, ...: :data:`hf_iia.zeroshot.ZERO_SHOT_TYPES`) as a classifier over these labels, scored as
            the zero-shot pipeline scores them (:mod:`hf_iia.zeroshot`); also per call.
        hypothesis_template: the prompt of each candidate label (default ``"This is a photo of {}."``).
    """

    def __init__(
        self,
        model: str | os.PathLike | nn.Module,
        processor: object | None = None,
        *,
        method: str = "iia",
        layer: LayerSpec = None,
        preset: str | None = None,
        steps: int | Sequence[int] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        internal_batch_size: int | None = None,
        integrand: str | None = None,
        baselines: float | Sequence[float] | None = None,
        rule: str | None = None,
        fusion: str | None = None,
        combine: str | None = None,
        start: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        progress: bool = True,
        candidate_labels: Sequence[str] | None = None,
        hypothesis_template: str | None = None,
    ) -> None:
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        model, processor, device = from_pipeline(model, processor, device)  # IIAExplainer(pipe): its parts
        source = None
        device = check_device(device)  # before loading anything: a wrong device fails at once
        if isinstance(model, (str, os.PathLike)):
            source = model
            model = load_model(
                source,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle,
                zero_shot=candidate_labels is not None,
            )
            processor = (
                processor if processor is not None else load_processor(source, trust_remote_code=trust_remote_code)
            )
            if device is None:
                from accelerate import PartialState

                device = PartialState().device
        elif not isinstance(model, nn.Module):
            raise UnsupportedModelError(
                f"model must be a Hub id, a checkpoint folder or a torch.nn.Module, got {type(model).__name__}"
            )
        model = unwrap(model)
        if candidate_labels is not None or hypothesis_template is not None or zero_shot_type(model) is not None:
            model, processor = zero_shot_classifier(
                model, processor, candidate_labels, hypothesis_template, source, trust_remote_code
            )
        # Shared with every explainer of a model sharing a module: hooks never mix. Moving the model and probing it
        # (hooks, eval mode) happen under it too, or a probe during another thread's run would restore, after that
        # run, the flags it found mid-run (eval) on the modules the two models share.
        self._lock = model_lock(model)
        options = MethodOptions(layer, preset, steps, integrand, baselines, rule, fusion, combine, start)
        with self._lock:
            if device is not None or dtype is not None:
                model.to(device=device, dtype=dtype)
            self.adapter, self.spec, self._fuse, self._integrate = prepare(method, model, options, processor)
        self.model = model
        self.processor: Any = processor  # a transformers image processor or any callable images -> tensor
        self.method = method
        self._options = options  # what __setstate__ rebuilds the adapter, spec and fusion from
        if internal_batch_size is not None and internal_batch_size < 1:
            raise IIAError(f"internal_batch_size must be a positive int, got {internal_batch_size}")
        self.internal_batch_size = internal_batch_size or DEFAULT_INTERNAL_BATCH_SIZE
        self.progress = progress
        self._geometries: dict[tuple[int, int], Geometry | None] = {}
        if hasattr(model, "config"):
            score_function(model.config)  # a config.function_to_apply transformers would refuse fails here, not later
        if method == "iia" and layer is None:
            self._resolve_default_level(options)

    def _resolve_default_level(self, options: MethodOptions) -> None:
        """Apply the preset's ``grid_factor`` rule (:func:`~hf_iia.presets.finest_default`): one probe forward at the
        processor's input size (without a processor: the config's ``image_size``) finds the deepest feature map
        with a fine enough grid. Without a processor or a usable ``image_size`` the input size is unknown, so the
        probe is skipped and the family's default level stays, with a warning naming ``processor=`` and ``layer=``."""
        grid_factor = self.family.preset(options.preset).grid_factor
        if not grid_factor or not isinstance(self.adapter, FeatureMapAdapter) or len(self.adapter.levels) != 1:
            return
        if self.processor is None and _config_input_size(getattr(self.model, "config", None)) is None:
            warnings.warn(
                f"{type(self.model).__name__} has no image processor and its config gives no image_size, so the "
                f"default level cannot be fitted to the input size; using {self.adapter.levels[0]!r}. Pass "
                "processor= (the default level then follows its input size) or layer= to choose it",
                UserWarning,
                stacklevel=3,
            )
            return
        level = finest_default(self.layers(), self.adapter.levels[0], grid_factor)
        if level != self.adapter.levels[0]:
            self._options = replace(options, layer=level)
            with self._lock:
                self.adapter, self.spec, self._fuse, self._integrate = prepare(
                    self.method, self.model, self._options, self.processor
                )

    # Built from the model, the processor and ``_options`` by ``prepare`` and ``model_lock``: the fusion and a named
    # start can be closures, and the lock holds a ``threading.local`` and module locks, none of which pickle.
    _REBUILT = ("adapter", "spec", "_fuse", "_integrate", "_lock", "_geometries")

    def __getstate__(self) -> dict[str, Any]:
        """The picklable state (for ``dataset.map(..., num_proc=N)``, multiprocessing and ``datasets``'
        fingerprints): the model, the processor and the settings; what is derived from them is rebuilt on
        unpickling, and the geometry cache is left out so that equal explainers hash equally."""
        return {name: value for name, value in self.__dict__.items() if name not in self._REBUILT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild the adapter, integral, fusion and model lock for the unpickled model. Explainers unpickled
        together over one model object share its lock, as they did before pickling."""
        self.__dict__.update(state)
        self._lock = model_lock(self.model)
        with self._lock:  # preparing may probe the model: never during another run on it (see __init__)
            self.adapter, self.spec, self._fuse, self._integrate = prepare(
                self.method, self.model, self._options, self.processor
            )
        self._geometries = {}

    @property
    def family(self) -> Family:
        """What the model's family declares: its presets and default comparison method (``.comparison``)."""
        return self.adapter.family

    @property
    def score_function(self) -> str | None:
        """How ``Explanation.score`` comes from the logits (:func:`hf_iia.scores.score_function`, the rule of
        transformers' image-classification pipeline); ``None`` for a plain module without a config, whose
        explanations then say what was applied for its logits' width."""
        config = getattr(self.model, "config", None)
        return score_function(config) if config is not None else None

    def layers(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every layer this explainer can integrate over (a ``layer=`` value) with the shape of its representation
        for one image (``[1, ...]``; feature maps channels-first), in forward order, from one forward pass of a
        blank image through the processor (without one: a zero input of the config's ``image_size``). The default
        is ``self.adapter.levels``.

        Raises:
            ImageInputError: there is no processor and the config gives no usable ``image_size``, or the probe
                forward fails (the message names ``processor=`` and ``layer=``).
        """
        config = getattr(self.model, "config", None)
        if self.processor is not None:
            pixel_values, _ = self.preprocess(Image.new("RGB", (224, 224), (128, 128, 128)))
            what = "a blank image through the processor"
        else:
            size = _config_input_size(config)
            if size is None:
                raise ImageInputError(
                    f"{type(self.model).__name__} has no image processor and its config gives no image_size, so the "
                    "input size of a probe is unknown; pass processor= (e.g. AutoImageProcessor.from_pretrained(...))"
                )
            channels = getattr(config, "num_channels", 3)
            pixel_values = torch.zeros(1, channels if isinstance(channels, int) and channels > 0 else 3, *size)
            what = f"a zero input of config.image_size {list(size)} (no processor)"
        parameter = next(self.model.parameters(), None)
        if parameter is not None:
            pixel_values = pixel_values.to(parameter.device, parameter.dtype)
        run = _ShapeRun()
        try:
            with (
                self._lock,
                evaluation_mode(self.model),
                torch.no_grad(),
                self.adapter.installed(run, self.adapter.taps),
            ):
                self.adapter.logits(pixel_values)
        except IIAError:
            raise
        except (RuntimeError, ValueError, ArithmeticError, IndexError, TypeError) as error:
            raise ImageInputError(
                f"{type(self.model).__name__} fails on {what}, input {list(pixel_values.shape)} "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); pass processor= the "
                "model's image processor, or layer= (which needs no probe) and inputs of the size the model takes"
            ) from error
        return [(tap, run.shapes[tap]) for tap in self.adapter.taps if tap in run.shapes]

    # ----------------------------------------------------------------- labels
    @property
    def id2label(self) -> dict[int, str]:
        """Class index -> label name, from the model config (empty for plain modules)."""
        labels = getattr(getattr(self.model, "config", None), "id2label", None) or {}
        return {int(k): v for k, v in labels.items()}

    def _num_classes(self) -> int | None:
        config = getattr(self.model, "config", None)
        return getattr(config, "num_labels", None) if config is not None else None

    def resolve_targets(self, target: Targets, batch: int) -> torch.Tensor:
        """``[B]`` int64 class indices (``-1`` = top-1) from ``None``, an index, a label name, or one per image."""
        value: Any = target.tolist() if isinstance(target, torch.Tensor | np.ndarray) else target
        if isinstance(value, (list, tuple)):
            if len(value) != batch:
                raise TargetError(
                    f"got {len(value)} targets for {batch} images; pass one target per image or a single one"
                )
            return torch.tensor([self._one_target(t) for t in value], dtype=torch.int64)
        return torch.full((batch,), self._one_target(value), dtype=torch.int64)

    def _one_target(self, target: Target) -> int:
        if target is None:
            return -1
        if isinstance(target, str):
            return label_index(self.id2label, target)
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            return class_index(int(target), self._num_classes())
        raise TargetError(f"target must be None, a class index or a label name, got {type(target).__name__}")

    # ------------------------------------------------------------ preprocess
    def _pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        if self.processor is None:
            raise ImageInputError(
                "this explainer has no image processor: pass processor= (e.g. AutoImageProcessor.from_pretrained"
                "(...)), or preprocess yourself and call explainer.attribute(pixel_values)"
            )
        try:
            pixel_values = process(self.processor, images)
        except (ValueError, RuntimeError) as error:  # e.g. images of different sizes that a processor does not resize
            channels = getattr(getattr(self.model, "config", None), "num_channels", None)
            mean = getattr(self.processor, "image_mean", None)
            if isinstance(channels, int) and isinstance(mean, (list, tuple)) and len(mean) not in (1, channels):
                raise ImageInputError(
                    f"the image processor normalises {len(mean)} channels (image_mean {list(mean)}) but "
                    f"{type(self.model).__name__} takes {channels} (config.num_channels); fix image_mean and image_std "
                    "in preprocessor_config.json, or pass processor= one made for this model"
                ) from error
            sizes = sorted({image.size for image in images})
            raise ImageInputError(
                f"the image processor could not turn these images (sizes {sizes[:4]}) into one batch ({error}); "
                "pass images of one size, explain them one at a time, or use a processor that resizes"
            ) from error
        return pixel_values

    def geometry(self, size: tuple[int, int]) -> Geometry | None:
        """How the processor maps an image of ``size = (W, H)`` onto the model input (cached)."""
        if size not in self._geometries:
            if len(self._geometries) > 64:
                self._geometries.clear()
            # Through preprocess, as the images go (a grayscale model's processor gets luminance).
            self._geometries[size] = probe_geometry(lambda probes: self.preprocess(probes)[0], size)
        return self._geometries[size]

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> tuple[torch.Tensor, list[Image.Image]]:
        """Images -> (``pixel_values`` ``[B, C, H, W]``, the original RGB images)."""
        items = cast(list[ImageLike], list(images) if isinstance(images, (list, tuple)) else [images])
        originals = [to_rgb(item) for item in items]
        if getattr(getattr(self.model, "config", None), "num_channels", 3) == 1:
            # A grayscale model's own processor expects one channel: hand it luminance, keep RGB for overlays.
            return self._pixel_values([image.convert("L") for image in originals]), originals
        return self._pixel_values(originals), originals

    # --------------------------------------------------------------- forward
    def attribute(self, pixel_values: torch.Tensor, target: Targets = None) -> torch.Tensor:
        """Maps of the explainer's method for preprocessed inputs.

        Args:
            pixel_values: ``[B, C, H, W]`` (or ``[C, H, W]``) model inputs.
            target: ``None`` (top-1), a class index, a label name, or one per image.

        Returns:
            ``[B, H, W]`` float32 on CPU, each map min-max normalised to ``[0, 1]``.
        """
        return self._forward(pixel_values, target)[0]

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model's logits for preprocessed inputs, without gradients (e.g. the ``forward`` of
        :func:`hf_iia.metrics.deletion_auc`).

        The inputs are moved to the model's device and dtype; the call holds the model's lock and
        runs in eval mode, restoring every submodule's train/eval flag afterwards, so it never
        overlaps an attribution of another explainer sharing the model.

        Args:
            pixel_values: ``[B, C, H, W]`` (or ``[C, H, W]``) model inputs.

        Returns:
            ``[B, num_classes]`` float32 logits on the model's device.
        """
        pixel_values = _check_pixel_values(pixel_values)
        parameter = next(self.model.parameters(), None)
        if parameter is not None:
            pixel_values = pixel_values.to(parameter.device, parameter.dtype)
        with self._lock, evaluation_mode(self.model), torch.no_grad():
            return self.adapter.logits(pixel_values).float()

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` float32 scores of every class from the model's ``logits`` ``[B, K]``, as ``Explanation.score``
        reports them (:attr:`score_function`; for a plain module, decided by the logits' width ``K``)."""
        return apply_score_function(logits, score_function(getattr(self.model, "config", None), logits.shape[1]))

    def _forward(
        self, pixel_values: torch.Tensor, target: Targets
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str, torch.Tensor]:
        """``pixel_values`` ``[B, C, H, W]`` -> (maps ``[B, H, W]``, targets ``[B]``, scores ``[B]``, the score
        function's name, zero levels ``[B]``: see :meth:`attribute` and :func:`zero_levels`)."""
        pixel_values = _check_pixel_values(pixel_values)
        self.adapter.check_input(pixel_values)
        targets = self.resolve_targets(target, pixel_values.shape[0])
        config = getattr(self.model, "config", None)
        if pixel_values.shape[0] == 0:
            empty = torch.empty(0)
            return torch.empty(0, *pixel_values.shape[2:]), targets, empty, score_function(config), empty
        parameter = next(self.model.parameters(), None)
        if parameter is not None:
            pixel_values = pixel_values.to(parameter.device, parameter.dtype)
        with self._lock, evaluation_mode(self.model):
            result = self._integrate(
                self.adapter,
                pixel_values,
                targets,
                self.spec,
                internal_batch_size=self.internal_batch_size,
                progress=self.progress,
            )
        maps, zeros = self._maps(result.integrals, pixel_values)
        name = score_function(config, result.logits.shape[1])
        return maps, result.targets, scores(result.logits, result.targets, name), name, zeros

    def postprocess(self, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        """The method's fusion of integrated quantities ``{tap: [B, ...]}`` (:attr:`IntegrationResult.integrals`) for
        ``pixel_values`` ``[B, C, H, W]``, upsampled to the input size and min-max normalised: ``[B, H, W]`` float32
        on CPU.

        The fusion, upsampling and normalisation run in float64: an attention map is a rollout close to a constant
        (1 / tokens) plus a small contrast, and float32 rounding of that constant, which differs with the batch's
        shape and the CPU, would be amplified by the min-max normalisation to ~1e-4.
        """
        return self._maps(integrals, pixel_values)[0]

    def _maps(
        self, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(:meth:`postprocess`'s maps ``[B, H, W]``, where each raw map's 0 lands on them ``[B]``)."""
        precise = {tap: _float64(integral) for tap, integral in integrals.items()}
        raw = self._fuse(self.adapter, precise, _float64(pixel_values)).cpu()
        upsampled = upsample(raw, input_size(pixel_values), self.adapter.upsample_mode)
        return normalise(upsampled).float(), zero_levels(upsampled).float()

    def __call__(
        self,
        images: ImageLike | Sequence[ImageLike] | torch.Tensor,
        target: Targets = None,
        candidate_labels: Sequence[str] | None = None,
    ):
        """Explain one image (-> :class:`Explanation`) or a list (-> list).

        ``images``: a path, PIL image or numpy array (``[H, W]`` / ``[H, W, C]``), a list
        of them, or a preprocessed ``pixel_values`` tensor ``[C, H, W]`` / ``[B, C, H, W]``.
        ``candidate_labels``: a zero-shot model's labels for this call (the constructor's otherwise).
        """
        if candidate_labels is not None:
            with candidates(self.model, candidate_labels):
                return self(images, target)
        if isinstance(images, torch.Tensor):
            single = images.dim() == 3
            pixel_values, originals = _check_pixel_values(images), cast(list[Image.Image], [])
        else:
            single = not isinstance(images, (list, tuple))
            if not single and not images:
                self.resolve_targets(target, 0)  # a target list must still match the (empty) batch
                return []
            pixel_values, originals = self.preprocess(images)
        maps, targets, values, name, zeros = self._forward(pixel_values, target)
        labels = self.id2label
        signed = METHODS[self.method].signed
        explanations = [
            Explanation(
                heatmap=maps[i].numpy(),
                target=int(targets[i]),
                label=labels.get(int(targets[i])),
                score=float(values[i]),
                image=originals[i] if originals else None,
                geometry=self.geometry(originals[i].size) if originals else None,
                pixel_values=pixel_values[i].detach().cpu(),
                score_function=name,
                zero_level=float(zeros[i]) if signed else None,
            )
            for i in range(maps.shape[0])
        ]
        return explanations[0] if single else explanations


class _ShapeRun:
    """A :class:`~hf_iia.adapters.TapRun` that changes nothing and records each representation's shape."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def expand(self, tap: str, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tensors

    def represent(self, tap: str, rep: torch.Tensor) -> torch.Tensor:
        self.shapes[tap] = tuple(rep.shape)
        return rep


def _float64(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float64, on the CPU where its device has no float64 (MPS)."""
    return (tensor.cpu() if tensor.device.type == "mps" else tensor).double()


def _config_input_size(config: object | None) -> tuple[int, int] | None:
    """``(H, W)`` of the model input from ``config.image_size`` (an int or a pair; a composite model's
    ``vision_config``; a timm wrapper's ``pretrained_cfg["input_size"]``), or ``None`` when it gives none usable."""
    vision = getattr(config, "vision_config", None) or config
    size = getattr(vision, "image_size", None)
    if size is None:
        pretrained = getattr(config, "pretrained_cfg", None)
        size = pretrained.get("input_size", [None])[1:] if isinstance(pretrained, dict) else None
    if isinstance(size, int):
        size = (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return int(size[0]), int(size[1])
    return None


def _check_pixel_values(pixel_values: object) -> torch.Tensor:
    if not isinstance(pixel_values, torch.Tensor):
        raise ImageInputError(f"pixel_values must be a torch.Tensor [B, C, H, W], got {type(pixel_values).__name__}")
    if pixel_values.dim() == 3:
        pixel_values = pixel_values.unsqueeze(0)
    if pixel_values.dim() != 4 or (pixel_values.numel() and pixel_values.shape[1] not in (1, 3, 4)):
        raise ImageInputError(
            f"pixel_values has shape {list(pixel_values.shape)}; expected [B, C, H, W] (or [C, H, W]) with C = 1, 3 or 4"
        )
    if not pixel_values.is_floating_point():
        raise ImageInputError(f"pixel_values must be floating point (preprocessed), got {pixel_values.dtype}")
    if not torch.isfinite(pixel_values).all():
        raise ImageInputError("pixel_values contains NaN or inf; pass finite, preprocessed values")
    return pixel_values


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``[B, h, w] -> [B, H, W]`` with ``mode`` (bicubic/bilinear, ``align_corners=False``)."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    return torch.nn.functional.interpolate(maps.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)


def _span(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(low, span, constant)`` of each ``[H, W]`` map of ``[B, H, W]``, each ``[B, 1, 1]``. A span within the
    dtype's rounding of the map's magnitude is rounding noise (e.g. a constant map resampled bicubically), not
    contrast: the map counts as constant, since stretching it to [0, 1] would draw noise as a map."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1)
    span = high - low
    noise = 64 * torch.finfo(maps.dtype).eps * torch.maximum(low.abs(), high.abs())
    return low, span, ~(span > noise) | ~torch.isfinite(span)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each ``[H, W]`` map of ``[B, H, W]`` to ``[0, 1]``; a constant map becomes zeros (with a warning)."""
    low, span, constant = _span(maps)
    if constant.any():
        warnings.warn(
            f"{int(constant.sum())} map(s) are constant (the integrand is the same everywhere, e.g. all zero); "
            "returning all-zero maps for them",
            RuntimeWarning,
            stacklevel=3,
        )
    out = (maps - low) / torch.where(constant, torch.ones_like(span), span)
    return torch.where(constant, torch.zeros_like(out), out).clamp_(0, 1)


def zero_levels(maps: torch.Tensor) -> torch.Tensor:
    """``[B]``: where 0 of each raw map of ``[B, H, W]`` lands after :func:`normalise` (0 for a constant map)."""
    low, span, constant = _span(maps)
    zero = -low / torch.where(constant, torch.ones_like(span), span)
    return torch.where(constant, torch.zeros_like(zero), zero).flatten()


_MODULE_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_MODULE_LOCKS_GUARD = threading.Lock()


class _ModelLock:
    """Holds the lock of every module of a model for the duration of a run.

    Hooks, the attention implementation and train/eval flags are installed on the modules themselves, so two
    explainers whose models share any module (one model, or two classifiers over one backbone) must not run at
    once. The locks are taken in one global order (by ``id``), so two runs can never wait on each other. Taking
    and releasing them is an :class:`~hf_iia.adapters.guard.Installation`: an interrupt cannot leave one held.
    """

    def __init__(self, model: nn.Module) -> None:
        with _MODULE_LOCKS_GUARD:
            modules = sorted({id(module): module for module in model.modules()}.items())
            self._locks = [_MODULE_LOCKS.setdefault(module, threading.Lock()) for _, module in modules]
        self._held = threading.local()  # this thread's open installations (one per nested run)

    def _take(self, installation: Installation) -> None:
        for lock in self._locks:
            acquire(installation, lock)
        stack = self._held.__dict__.setdefault("stack", [])
        stack.append(installation)
        installation.undo(stack.pop)  # an interrupt delivered at the end of the set-up undoes it: no stale entry

    def __enter__(self) -> None:
        Installation(self._take).__enter__()

    @protected
    def __exit__(self, *exc: Any) -> None:
        self._held.stack[-1].__exit__(*exc)  # its undo pops it

    def locked(self) -> bool:
        """Whether any run holds (some of) the locks now."""
        return any(lock.locked() for lock in self._locks)


def model_lock(model: nn.Module) -> _ModelLock:
    """The lock an explainer of ``model`` holds while it runs (see :class:`_ModelLock`)."""
    return _ModelLock(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The eager module behind ``torch.compile`` (``OptimizedModule``), ``nn.DataParallel`` and
    ``DistributedDataParallel`` wrappers: hooks and the attention function are installed on it, and a compiled
    graph would not run them (the maps would differ from the eager model's). A model with a compiled
    *submodule* is refused: its eager code is not the code that runs."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule keeps the eager module here
        if isinstance(inner, nn.Module):
            model = inner
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            break
    compiled = [
        name for name, module in model.named_modules() if isinstance(getattr(module, "_orig_mod", None), nn.Module)
    ]
    if compiled:
        raise UnsupportedModelError(
            f"submodule(s) {compiled} of {type(model).__name__} are compiled with torch.compile; the compiled graph "
            "does not run the hooks IIA installs, so its maps would be wrong. Pass the uncompiled model"
        )
    return model
