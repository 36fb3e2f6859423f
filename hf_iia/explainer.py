"""``IIAExplainer``: images in, IIA maps out, in transformers' pipeline stages ``preprocess -> _forward -> postprocess``.

- :meth:`IIAExplainer.preprocess`: images -> ``pixel_values`` through the processor (:mod:`hf_iia.imaging`);
- :meth:`IIAExplainer._forward`: ``pixel_values`` and ``target`` -> the method's integrals, under the model's lock
  (:mod:`hf_iia.locks`) on the model's device;
- :meth:`IIAExplainer.postprocess`: integrals -> the method's maps, upsampled and normalised (:mod:`hf_iia.maps`),
  then one :class:`~hf_iia.explanation.Explanation` per image.

Nothing here is model-specific: the adapter (chosen by ``config.model_type``) reaches the representations and the
engine integrates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import nn

from .adapters.base import LayerSpec, evaluation_mode, on_model
from .engine import Contrast, EngineTargets, IntegrationResult, target_scalars
from .errors import IIAError, ImageInputError, TargetError, UnsupportedModelError
from .explanation import Explanation
from .family import Family
from .imaging import Geometry, ImageLike, check_pixel_values, probe_geometry, process_inputs, to_rgb
from .labels import Selection, class_index, label_index, selection
from .loading import check_device, load_model, load_processor, unwrap
from .locks import model_lock
from .maps import normalise, to_float64, upsample, zero_levels
from .methods import METHODS, MethodOptions, input_size, prepare
from .methods.probe import Preprocess, layer_shapes
from .scores import apply_score_function, score_function, scores
from .zeroshot import candidates, from_pipeline, zero_shot_classifier, zero_shot_type

__all__ = ["Explanation", "IIAExplainer", "model_lock", "normalise", "unwrap", "upsample", "zero_levels"]
"""Besides the explainer: the names that lived here before their own modules, imported from here as before."""

Target = int | str | None
Targets = Target | Sequence[int | str] | torch.Tensor | np.ndarray | Callable[[torch.Tensor], torch.Tensor]
"""What ``target=`` takes: ``None`` (top-1), a class index, a label name, one per image, a callable
(:data:`hf_iia.engine.TargetFunction`: one input's logits ``[1, K]`` -> the scalar ``[1]`` to explain), or
``"top_k:k"`` / ``"threshold:t"`` (several classes per image: :func:`hf_iia.labels.selection`)."""


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
        internal_batch_size: most integration points per forward/backward pass (it bounds the peak memory).
            Default: the adapter's (:attr:`~hf_iia.adapters.Adapter.default_internal_batch_size`): 8 on attention
            models, whose backward runs through every block, else 64; for ``method="ig"``, whose every point runs
            the whole network, at most 16.
        integrand: name of an integrand in :data:`hf_iia.integrands.INTEGRANDS`.
        baselines: IIA's constant path baselines: one float for every path, or ``(b0, b1, ...)``
            image path first (``b0`` in normalised pixel space: 0 is the processor's mean colour).
            Default: all zero, as the reference code.
        rule: IIA's quadrature rule on every path (:data:`hf_iia.engine.RULES`): ``"endpoints"``
            (``a = 0, 1/n, ..., 1``, the reference code's; the CNN default) or ``"riemann_right"``
            (``a = 1/n, ..., 1``; the ViT default) or ``"trapezoid"``.
        fusion: the rollout of an attention model's IIA map (:data:`hf_iia.fusions.ROLLOUTS`):
            ``"gradient_rollout"`` (the published rule), ``"normalised_gradient_rollout"`` (the same with each
            block's term scaled to mean row sum 1, so the map does not depend on the logits' scale),
            ``"globally_normalised_gradient_rollout"`` (every block's term divided by one number per image, so the
            blocks keep their relative size), ``"gae"`` (Chefer et al.'s propagation of the integrated terms) or
            ``"globally_normalised_gae"`` (the same, scale-invariant).
        combine: where a feature-map model's IIA map is formed when several levels are interpolated
            (:data:`hf_iia.fusions.LEVEL_FUSIONS`): ``"deepest"`` (the default: the channel sum at the deepest level),
            ``"earliest"`` (the integrand read at the earliest level: a finer grid), ``"product"`` or ``"sum"``
            (every level's channel sum on the finest grid, min-max normalised, multiplied or averaged).
        start: a named start of the image path for ``iia`` and ``ig`` (:data:`hf_iia.presets.STARTS`) instead of
            ``baselines=``: ``"mean"`` (0 in normalised space), ``"black"`` (the processor's output for a black image)
            or ``"blur"`` (each image Gaussian-blurred). Default: the preset's (:attr:`~hf_iia.family.Preset.start`:
            ``"blur"`` for IIA on attention models taking images, else ``"mean"``); with ``baselines=`` given, none.
        contrast: what every method explains for the target class ``c`` (:data:`hf_iia.engine.Contrast`): ``None``
            (the default) its logit ``z_c``; ``"mean"`` ``z_c`` minus the mean of the other logits; ``"max"`` ``z_c``
            minus the largest other logit (for the top-1 class: its margin over the runner-up); ``"log_softmax"`` its
            log-probability ``z_c - logsumexp(z)``. A contrastive map shows what sets ``c`` apart from the other
            classes, not what raises them all.
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
        contrast: Contrast = None,
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
        self.model = model
        self.processor: Any = processor  # a transformers image processor or any callable images -> tensor
        self.method = method
        self.contrast = contrast
        options = MethodOptions(layer, preset, steps, integrand, baselines, rule, fusion, combine, start)
        with self._lock:
            if device is not None or dtype is not None:
                model.to(device=device, dtype=dtype)
            # _options: what __setstate__ rebuilds the adapter, spec and fusion from (IIA's default level filled in).
            self.adapter, self.spec, self._fuse, self._integrate, self._options = prepare(
                method, model, options, processor, self._probe_preprocess(), contrast
            )
        if internal_batch_size is not None and internal_batch_size < 1:
            raise IIAError(f"internal_batch_size must be a positive int, got {internal_batch_size}")
        self.internal_batch_size = internal_batch_size or self.adapter.default_internal_batch_size
        self.progress = progress
        self._geometries: dict[tuple[int, int], Geometry | None] = {}
        if hasattr(model, "config"):
            score_function(model.config)  # a config.function_to_apply transformers would refuse fails here, not later

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
            self.adapter, self.spec, self._fuse, self._integrate, self._options = prepare(
                self.method, self.model, self._options, self.processor, self._probe_preprocess(), self.contrast
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
        with self._lock:
            return layer_shapes(self.adapter, self._probe_preprocess())

    def _probe_preprocess(self) -> Preprocess | None:
        """One image -> ``pixel_values`` ``[1, C, H, W]`` through :meth:`preprocess`, for the shape probe
        (:func:`~hf_iia.methods.probe.layer_shapes`); ``None`` without a processor."""
        return None if self.processor is None else (lambda image: self.preprocess(image)[0])

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
        raise TargetError(
            f"target must be None, a class index, a label name, a callable (logits [1, K] -> [1]) or 'top_k:k' / "
            f"'threshold:t', got {type(target).__name__}"
        )

    # ------------------------------------------------------------ preprocess
    def _pixel_values(self, images: list[Image.Image]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``pixel_values`` and the other processor outputs the adapter reads (:attr:`Adapter.input_names`)."""
        if self.processor is None:
            raise ImageInputError(
                "this explainer has no image processor: pass processor= (e.g. AutoImageProcessor.from_pretrained"
                "(...)), or preprocess yourself and call explainer.attribute(pixel_values)"
            )
        try:
            # While __init__ prepares the method (a shape probe of feature-map families), there is no adapter yet.
            names = self.adapter.input_names if hasattr(self, "adapter") else ()
            pixel_values, inputs = process_inputs(self.processor, images, names)
        except ImageInputError:
            raise
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
        return pixel_values, inputs

    def geometry(self, size: tuple[int, int]) -> Geometry | None:
        """How the processor maps an image of ``size = (W, H)`` onto the model input (cached)."""
        if size not in self._geometries:
            if len(self._geometries) > 64:
                self._geometries.clear()
            # Through preprocess, as the images go (a grayscale model's processor gets luminance).
            self._geometries[size] = probe_geometry(lambda probes: self.preprocess(probes)[0], size)
        return self._geometries[size]

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> tuple[torch.Tensor, list[Image.Image]]:
        """Images -> (``pixel_values`` ``[B, C, H, W]``, the original RGB images); for a NaFlex model (SigLIP2)
        ``pixel_values`` are patches ``[B, P, C*p*p]`` (:meth:`model_inputs` also gives their masks and shapes)."""
        pixel_values, _, originals = self.model_inputs(images)
        return pixel_values, originals

    def model_inputs(
        self, images: ImageLike | Sequence[ImageLike]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[Image.Image]]:
        """Images -> (``pixel_values``, the processor's other outputs the model reads (:attr:`Adapter.input_names`,
        each ``[B, ...]``; empty for every family but NaFlex), the original RGB images)."""
        items = cast(list[ImageLike], list(images) if isinstance(images, (list, tuple)) else [images])
        originals = [to_rgb(item) for item in items]
        if getattr(getattr(self.model, "config", None), "num_channels", 3) == 1:
            # A grayscale model's own processor expects one channel: hand it luminance, keep RGB for overlays.
            return *self._pixel_values([image.convert("L") for image in originals]), originals
        return *self._pixel_values(originals), originals

    # --------------------------------------------------------------- forward
    def attribute(self, pixel_values: torch.Tensor, target: Targets = None) -> torch.Tensor:
        """Maps of the explainer's method for preprocessed inputs.

        Args:
            pixel_values: ``[B, C, H, W]`` (or ``[C, H, W]``) model inputs.
            target: ``None`` (top-1), a class index, a label name, one per image, a callable (see
                :meth:`__call__`), or ``"top_k:k"``.

        Returns:
            ``[B, H, W]`` float32 on CPU, each map min-max normalised to ``[0, 1]``; ``[B, k, H, W]`` for
            ``"top_k:k"`` (best first).

        Raises:
            TargetError: ``"threshold:t"``, whose count of maps differs between images (call the explainer instead).
        """
        chosen = selection(target)
        if chosen is not None and chosen.threshold is not None:
            raise TargetError(
                "attribute() returns one tensor, but a threshold selects a different number of classes per image; "
                "call explainer(pixel_values, threshold=...) for lists of explanations, or pass target='top_k:k'"
            )
        outputs = self._forward(self._checked(pixel_values), chosen or target)
        maps = self._result_maps(outputs)[0]
        targets = outputs.result.targets
        return maps if targets.dim() == 1 else maps.view(*targets.shape, *maps.shape[1:])

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
        pixel_values = on_model(self.model, self._checked(pixel_values))
        with self._lock, evaluation_mode(self.model), torch.no_grad():
            return self.adapter.logits(pixel_values).float()

    def _checked(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """A ``pixel_values`` tensor given alone, checked (:func:`~hf_iia.imaging.check_pixel_values`); refused with the
        fix for a model that also reads other processor outputs (NaFlex: the images must be given instead)."""
        if self.adapter.input_names:
            self.adapter.check_input(pixel_values)  # no inputs are bound: refused, naming the fix
        return check_pixel_values(pixel_values)

    def _bound_inputs(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``inputs`` given with a ``pixel_values`` tensor, checked: exactly the processor outputs the model reads
        (:attr:`Adapter.input_names`), each a tensor (their shapes are the adapter's to check)."""
        read = set(self.adapter.input_names)
        if set(inputs) != read or not all(isinstance(value, torch.Tensor) for value in inputs.values()):
            wanted = sorted(read) or "nothing"
            raise ImageInputError(
                f"{type(self.model).__name__} reads {wanted} besides pixel_values; inputs= got {sorted(inputs)} "
                "(tensors, as the image processor returns them)"
            )
        return dict(inputs)

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` float32 scores of every class from the model's ``logits`` ``[B, K]``, as ``Explanation.score``
        reports them (:attr:`score_function`; for a plain module, decided by the logits' width ``K``)."""
        return apply_score_function(logits, score_function(getattr(self.model, "config", None), logits.shape[1]))

    def _forward(
        self,
        pixel_values: torch.Tensor,
        target: Targets | Selection,
        inputs: dict[str, torch.Tensor] | None = None,
    ) -> _Outputs:
        """The forward stage: ``pixel_values`` ``[B, C, H, W]`` (checked; NaFlex patches with their ``inputs``, the
        processor's masks and shapes) and ``target`` (or a :class:`Selection` of several per image) -> the method's
        integrated quantities, the logits and the explained classes (:class:`_Outputs`), under the model's lock in
        eval mode."""
        inputs = inputs or {}
        with self.adapter.with_inputs(inputs):
            self.adapter.check_input(pixel_values)
        batch = pixel_values.shape[0]
        targets: EngineTargets
        if isinstance(target, Selection):
            targets = self._selected(target, batch)
        elif callable(target):
            targets = target
        else:
            targets = self.resolve_targets(cast(Targets, target), batch)
        function = None if isinstance(targets, torch.Tensor) else targets
        if batch == 0:
            empty = torch.empty(0, *([0] if isinstance(target, Selection) else []), dtype=torch.int64)
            return _Outputs(
                pixel_values, pixel_values, IntegrationResult({}, torch.empty(0, 0), empty), inputs, function
            )
        model_inputs = on_model(self.model, pixel_values)
        counts = None
        with self._lock, evaluation_mode(self.model), self.adapter.with_inputs(inputs):
            if isinstance(target, Selection) and target.threshold is not None:
                targets, counts = self._above(target.threshold, model_inputs)
            if isinstance(targets, torch.Tensor) and targets.dim() == 2 and targets.shape[1] == 0:
                # nothing reaches the threshold in any image: no integral to compute
                result = IntegrationResult({}, torch.empty(batch, 0), targets)
            else:
                result = self._integrate(
                    self.adapter,
                    model_inputs,
                    targets,
                    self.spec,
                    internal_batch_size=self.internal_batch_size,
                    progress=self.progress,
                )
        return _Outputs(pixel_values, model_inputs, result, inputs, function, counts)

    def _selected(self, chosen: Selection, batch: int) -> torch.Tensor:
        """``[B, K]`` engine targets of a ``top_k`` selection (``-1 .. -K``: the engine ranks each image's classes on
        the forward pass it runs anyway), ``K`` at most the model's classes; for a ``threshold`` a placeholder
        ``[B, 0]`` (the classes are read from the scores in :meth:`_above`)."""
        if chosen.top_k is None:
            self._check_threshold(cast(float, chosen.threshold))
            return torch.empty(batch, 0, dtype=torch.int64)
        classes = self._num_classes()
        count = chosen.top_k if classes is None else min(chosen.top_k, classes)  # as the pipelines cap top_k
        return -torch.arange(1, count + 1, dtype=torch.int64).expand(batch, count).clone()

    def _check_threshold(self, threshold: float) -> None:
        name = self.score_function
        if name in ("softmax", "sigmoid") and not 0 <= threshold <= 1:
            raise TargetError(
                f"threshold={threshold} can never select a class: this model's scores are {name} probabilities in "
                "[0, 1]; pass a threshold between 0 and 1 (e.g. 0.5)"
            )

    def _above(self, threshold: float, model_inputs: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The classes of each image whose score (:meth:`class_scores`) is at least ``threshold``, best first, as
        ``[B, K]`` engine targets (``K`` the largest count; shorter rows padded with their own first class, or the
        top-1, whose maps are then dropped) and the count per image. One forward pass of the images, without
        gradients: the selection must be known before the integral."""
        with torch.no_grad():
            values = self.class_scores(self.adapter.logits(model_inputs).float()).cpu()
        order = values.argsort(dim=1, descending=True, stable=True)
        counts = (values >= threshold).sum(dim=1)
        width = int(counts.max()) if len(counts) else 0
        selected = order[:, :width].clone()
        for row, count in enumerate(counts.tolist()):
            selected[row, count:] = selected[row, 0] if count else -1
        return selected, counts.tolist()

    def postprocess(self, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        """The method's fusion of integrated quantities ``{tap: [B, ...]}`` (:attr:`IntegrationResult.integrals`) for
        ``pixel_values`` ``[B, C, H, W]``, upsampled to the input size and min-max normalised: ``[B, H, W]`` float32
        on CPU.

        The fusion, upsampling and normalisation run in float64 (:mod:`hf_iia.maps`): an attention map is a rollout
        close to a constant (1 / tokens) plus a small contrast, and float32 rounding of that constant, which differs
        with the batch's shape and the CPU, would be amplified by the min-max normalisation to ~1e-4.
        """
        return self._maps(integrals, pixel_values)[0]

    def _maps(
        self, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(:meth:`postprocess`'s maps ``[B, H, W]``, where each raw map's 0 lands on them ``[B]``: see
        :func:`~hf_iia.maps.zero_levels`); empty for an empty batch."""
        if pixel_values.shape[0] == 0 or not integrals:
            return torch.empty(0, *pixel_values.shape[2:]), torch.empty(0)
        precise = {tap: to_float64(integral) for tap, integral in integrals.items()}
        raw = self._fuse(self.adapter, precise, to_float64(pixel_values)).cpu()
        upsampled = upsample(raw, input_size(pixel_values), self.adapter.upsample_mode)
        return normalise(upsampled).float(), zero_levels(upsampled).float()

    def _own_size_maps(
        self, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor, inputs: dict[str, torch.Tensor]
    ) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        """:meth:`_maps` where each image has its own input size (NaFlex: :meth:`Adapter.image_sizes` under
        ``inputs``): image ``i``'s map ``[H_i, W_i]`` from its own integrals, fused with its own ``inputs`` and
        upsampled to its size; ``None`` where the images share the size of ``pixel_values``."""
        with self.adapter.with_inputs(inputs):
            sizes = self.adapter.image_sizes()
        if sizes is None:
            return None
        maps, zeros = [], []
        for index, size in enumerate(sizes):
            with self.adapter.with_inputs({name: value[index : index + 1] for name, value in inputs.items()}):
                one = {tap: to_float64(integral[index : index + 1]) for tap, integral in integrals.items()}
                raw = self._fuse(self.adapter, one, to_float64(pixel_values[index : index + 1])).cpu()
            upsampled = upsample(raw, size, self.adapter.upsample_mode)
            maps.append(normalise(upsampled).float()[0])
            zeros.append(zero_levels(upsampled).float()[0])
        return maps, torch.stack(zeros) if zeros else torch.empty(0)

    def _result_maps(self, outputs: _Outputs) -> tuple[Any, torch.Tensor]:
        """The maps of ``outputs`` (:meth:`_maps`, or a list of each image's own size for NaFlex:
        :meth:`_own_size_maps`) and their zero levels: ``B`` of them, or ``B * K`` image-major for ``K`` targets per
        image (the fusion reads each map's integrals beside its image's input)."""
        integrals, model_inputs, inputs = outputs.result.integrals, outputs.model_inputs, outputs.inputs
        if outputs.result.targets.dim() == 2:
            count = outputs.result.targets.shape[1]
            integrals = {tap: integral.flatten(0, 1) for tap, integral in integrals.items()}
            model_inputs = model_inputs.repeat_interleave(count, dim=0)
            inputs = {name: value.repeat_interleave(count, dim=0) for name, value in inputs.items()}
        own = self._own_size_maps(integrals, model_inputs, inputs) if integrals else None
        return own if own is not None else self._maps(integrals, model_inputs)

    def _explanations(self, outputs: _Outputs, originals: list[Image.Image]) -> list[Any]:
        """The postprocess stage: :meth:`postprocess`'s maps of ``outputs`` with their classes and scores, one
        :class:`Explanation` per image, or a list of them per image for several targets per image (``originals``:
        the RGB images, or ``[]`` for a ``pixel_values`` input)."""
        maps, zeros = self._result_maps(outputs)
        result = outputs.result
        batch = outputs.pixel_values.shape[0]
        several = result.targets.dim() == 2
        if not batch:
            return []
        targets = result.targets.view(batch, -1)
        if not targets.shape[1]:  # a threshold no class reaches
            return [[] for _ in range(batch)]
        counts = outputs.counts or [targets.shape[1]] * batch
        name = score_function(getattr(self.model, "config", None), result.logits.shape[1])
        if outputs.function is not None:
            name, label = "none", str(getattr(outputs.function, "__name__", type(outputs.function).__name__))
            with torch.no_grad():
                values = target_scalars(result.logits, outputs.function)  # [B, 1]: its value on each image
        else:
            label, values = None, torch.stack([scores(result.logits, column, name) for column in targets.t()], 1)
        labels = self.id2label
        signed = METHODS[self.method].signed
        with self.adapter.with_inputs(outputs.inputs):
            shown = [self.adapter.model_input_image(outputs.pixel_values, i) for i in range(batch)]
        # Each NaFlex image is resized to its own patch budget (no probe of a fixed-size output applies):
        # overlays draw on the model input.
        own_geometry = bool(originals) and not self.adapter.input_names

        def explanation(i: int, k: int) -> Explanation:
            flat = i * targets.shape[1] + k  # the map's row: image-major
            return Explanation(
                heatmap=maps[flat].numpy(),  # [H_i, W_i]: for NaFlex each image's own processed size
                target=int(targets[i, k]),
                label=label if outputs.function is not None else labels.get(int(targets[i, k])),
                score=float(values[i, k]),
                image=originals[i] if originals else None,
                geometry=self.geometry(originals[i].size) if own_geometry else None,
                pixel_values=shown[i].detach().cpu(),
                score_function=name,
                zero_level=float(zeros[flat]) if signed else None,
            )

        if several:
            return [[explanation(i, k) for k in range(counts[i])] for i in range(batch)]
        return [explanation(i, 0) for i in range(batch)]

    def __call__(
        self,
        images: ImageLike | Sequence[ImageLike] | torch.Tensor,
        target: Targets = None,
        candidate_labels: Sequence[str] | None = None,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        inputs: Mapping[str, torch.Tensor] | None = None,
    ):
        """Explain one image (-> :class:`Explanation`) or a list (-> list).

        ``images``: a path, PIL image or numpy array (``[H, W]`` / ``[H, W, C]``), a list
        of them, or a preprocessed ``pixel_values`` tensor ``[C, H, W]`` / ``[B, C, H, W]``. ``inputs``: with a
        ``pixel_values`` tensor ``[B, ...]``, the image processor's other outputs the model reads (SigLIP2 NaFlex:
        ``pixel_attention_mask`` ``[B, P]`` and ``spatial_shapes`` ``[B, 2]``), as the model's forward takes them;
        the result is then a list. ``target`` goes to
        the forward stage: ``None`` (top-1), a class index, a label name, one per image, or a callable
        (logits ``[1, K]`` -> ``[1]``: the scalar to explain; its explanation has ``target`` -1, ``label`` the
        callable's ``__name__`` and ``score`` its value on the image).
        ``candidate_labels``: a zero-shot model's labels for this call (the constructor's otherwise).

        Several classes per image (``top_k=k`` or ``target="top_k:k"``: the ``k`` best, at most all; ``threshold=t``
        or ``target="threshold:t"``: every class whose ``score`` is at least ``t``, e.g. a multi-label head's
        labels above 0.5): one image -> a list of :class:`Explanation`, best first; a list -> a list of such lists
        (one per image; with ``threshold`` they may differ in length, or be empty). The classes share each forward
        pass (:func:`hf_iia.engine.integrate`); the maps equal those of explaining each class alone.
        """
        if candidate_labels is not None:
            with candidates(self.model, candidate_labels):
                return self(images, target, top_k=top_k, threshold=threshold)
        chosen = selection(target, top_k, threshold)
        request: Targets | Selection = target if chosen is None else chosen
        if inputs is not None and not isinstance(images, torch.Tensor):
            raise ImageInputError(
                "inputs= goes with a preprocessed pixel_values tensor; pass images alone and the processor makes them"
            )
        bound: dict[str, torch.Tensor] = {}
        if isinstance(images, torch.Tensor) and inputs:
            bound = self._bound_inputs(inputs)
            single, pixel_values, originals = False, images, cast(list[Image.Image], [])
        elif isinstance(images, torch.Tensor):
            single = images.dim() == 3
            pixel_values, originals = self._checked(images), cast(list[Image.Image], [])
        else:
            single = not isinstance(images, (list, tuple))
            if not single and not images:
                if chosen is None and not callable(target):
                    self.resolve_targets(target, 0)  # a target list must still match the (empty) batch
                return []
            pixel_values, bound, originals = self.model_inputs(images)
        outputs = self._forward(pixel_values, request, bound)
        explanations = self._explanations(outputs, originals)
        return explanations[0] if single else explanations


@dataclass(frozen=True)
class _Outputs:
    """What the forward stage hands the postprocess stage for a batch of ``B`` images (``B`` may be 0).

    Attributes:
        pixel_values: ``[B, C, H, W]`` as given (what :attr:`Explanation.pixel_values` keeps).
        model_inputs: the same on the model's device and in its dtype (what the method and its fusion read).
        result: the method's integrals ``{tap: [B, ...]}``, logits ``[B, C]`` and explained classes ``[B]``
            (``{tap: [B, K, ...]}`` and ``[B, K]`` for ``K`` targets per image).
        function: the callable target, if the target was one.
        counts: how many of the ``K`` targets of each image were asked for (a threshold's; ``None``: all of them).
        inputs: the processor's other outputs the model reads (NaFlex masks and shapes, ``[B, ...]``), else empty.
    """

    pixel_values: torch.Tensor
    model_inputs: torch.Tensor
    result: IntegrationResult
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    function: Callable[[torch.Tensor], torch.Tensor] | None = None
    counts: list[int] | None = None
