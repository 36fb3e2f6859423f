"""ViT-family adapters: attention probabilities reached through transformers' AttentionInterface.

While a model runs under :meth:`ViTAdapter.installed`, its attention implementation is
switched (with the public ``set_attn_implementation``) to ``"hf_iia"``: an eager
attention function registered in ``AttentionInterface`` that hands each block's
attention probabilities ``[N, heads, T, T]`` to the engine and multiplies the values
by the tensor it gets back. A forward pre-hook on every block lets the engine repeat
the block's input rows. Nothing is monkey-patched and the model is not copied; on
exit the original implementation is restored and the function unregistered, uninterruptibly
(:mod:`hf_iia.adapters.guard`).

Which tokens the head reads is per-type knowledge, kept in one table (:data:`READOUTS`):
ViT reads the CLS token (row 0, patches from column 1); DeiT has a distillation token
(patches from column 2) and ``DeiTForImageClassificationWithTeacher`` averages the CLS and
distillation heads; BEiT mean-pools the patch tokens; DINOv2 concatenates the CLS token
and the patch mean (registers sit between them and are never part of the grid); CLIP
mean-pools the patch tokens; SigLIP and I-JEPA mean-pool every token (no CLS). The
rollout's relevance is read with those weights, so the map explains what the head uses.

Types whose attention does not go through AttentionInterface (:data:`HOOKED_ATTENTION`,
e.g. data2vec-vision) are reached by :class:`HookedViTAdapter` instead: a forward hook on
the dropout module each block applies to its softmax output receives the probabilities
(checked to be ``[N, heads, T, T]`` rows summing to 1, else refused) and returns the tensor
the values are multiplied by. The timm adapter reaches timm ViTs the same way.

LeGrad's intermediate predictions (:meth:`ViTAdapter.block_predictions`) need no per-type head knowledge: the last
block hands the model's own tail every block's output stacked along the batch, so each is read exactly as the head
reads the last block (final norm, the :data:`READOUTS` tokens, classifier); a tail that does not read rows one by one
is refused by the row count it returns.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.activations import ACT2CLS
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from ..errors import AttentionNotReachableError, IIAError, ImageInputError
from ..family import Family, Preset
from ..fusions import LEVEL_FUSIONS, LevelFusion, Rollout, channel_sum, gradient_rollout
from .base import AttentionAdapter, FeatureMapAdapter, LayerSpec, RelevanceAdapter, TapRun, config_of, resolve_layer
from .guard import Installation, remove_on_undo
from .lrp import identity_rule, layer_norm_rule, uniform_rule
from .registry import register_adapter

ATTENTION_NAME = "hf_iia"

VIT = Family(
    name="vit",
    presets={
        # 5 x 5 right-Riemann points (the a = 0 points are a blurred image and all-zero attention), last block,
        # the image path from the blurred image, the integrated terms propagated by GAE's rule: chosen on the
        # development splits of the synthetic-shapes and real-texture ViT and DeiT (scripts/design_search.py,
        # docs/BENCHMARKS.md), where the blurred start raised energy pointing game and mask AP on all four and GAE's
        # rule beat Gradient Rollout's. The authors' code: 6 x 6 points from the zero image, the interpolated
        # last-block attention built outside autograd, Gradient Rollout.
        "default": Preset(
            input_steps=5, level_steps=5, integrand="relu_grad_act", rule="riemann_right", fusion="gae", start="blur"
        ),
        "reference": Preset(input_steps=5, level_steps=5, integrand="relu_grad_act", detach_levels=True),
        # The paper's IIA3: the image and the last two blocks' attention. 5 right-Riemann steps per path
        # (5 x 5 x 5 = 125 points) are provisional, as the default's, until the benchmark tunes them.
        "iia3": Preset(input_steps=5, level_steps=5, integrand="relu_grad_act", rule="riemann_right", levels=2),
    },
    comparison="gae",
    description="attention probabilities of every block; GAE's propagation over the classifier's rows",
)

# The run whose taps the attention function feeds in this thread/context: (module id -> tap, run).
_ACTIVE: ContextVar[tuple[dict[int, str], TapRun] | None] = ContextVar("hf_iia_attention", default=None)
# Whether the attention function applies AttnLRP's uniform rule to its two products (RelevanceViTAdapter).
_RELEVANCE: ContextVar[bool] = ContextVar("hf_iia_relevance", default=False)
# How many blocks' intermediate predictions the model's logits stack, while ViTAdapter.block_predictions is active.
_PREDICTIONS: ContextVar[int | None] = ContextVar("hf_iia_block_predictions", default=None)
_REGISTRATION_LOCK = threading.Lock()
_registrations = 0


def _iia_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention (``[N, heads, T, d]`` inputs) whose probabilities pass through the active run."""
    if _RELEVANCE.get():
        # probs @ value shares the relevance equally between probs and value; query @ key^T shares the half
        # that reaches the scores (through the softmax) between query and key.
        query, key, value = uniform_rule(query, 4), uniform_rule(key, 4), uniform_rule(value, 2)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    active = _ACTIVE.get()
    if active is not None and id(module) in active[0]:
        probs = active[1].represent(active[0][id(module)], probs)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def _register_attention(installation: Installation) -> None:
    """Register the attention function until ``installation`` is undone (reference-counted across threads)."""
    global _registrations
    with _REGISTRATION_LOCK:
        if _registrations == 0:
            AttentionInterface.register(ATTENTION_NAME, _iia_attention)
            # The function is eager attention, so its masks are eager's (additive, [N, 1, T, T]): for an
            # implementation without a mask function transformers passes the processor's 2-D mask through unchanged.
            AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
        _registrations += 1
    installation.undo(_unregister_attention)


def _unregister_attention() -> None:
    global _registrations
    with _REGISTRATION_LOCK:
        _registrations -= 1
        if _registrations == 0:
            AttentionInterface._global_mapping.pop(ATTENTION_NAME, None)
            AttentionMaskInterface._global_mapping.pop(ATTENTION_NAME, None)


def _switch_attention(installation: Installation, model: nn.Module, name: str) -> None:
    """Switch ``model`` to attention implementation ``name`` until ``installation`` is undone.

    A composite config (CLIP, SigLIP: a vision and a text sub-config) is switched for the root and the vision
    sub-config only: the classifier has no text model, and naming its sub-config would warn on every call.
    """
    pretrained = cast(PreTrainedModel, model)
    vision = getattr(pretrained.config, "vision_config", None)
    request: str | dict[str, str] = {"": name, "vision_config": name} if vision is not None else name
    root = cast(str, pretrained.config._attn_implementation)
    original: str | dict[str, str] = root
    if vision is not None:
        original = {"": root, "vision_config": cast(str, vision._attn_implementation)}
    # Registered before the switch: a switch that fails half-way (root set, sub-config refused) is undone too.
    installation.undo(lambda: pretrained.set_attn_implementation(original))
    try:
        pretrained.set_attn_implementation(request)
    except (ValueError, KeyError, ImportError) as error:
        raise AttentionNotReachableError(
            f"{type(model).__name__} refused attention implementation {name!r} ({error}); IIA needs a ViT whose "
            "attention goes through transformers' AttentionInterface"
        ) from error
    if pretrained.config._attn_implementation != name:
        raise AttentionNotReachableError(
            f"{type(model).__name__} cannot switch its attention implementation, so its attention "
            "probabilities are unreachable; use a model whose attention goes through AttentionInterface "
            "(ViT, DeiT, ...) or explain a CNN-style layer with layer="
        )


@dataclass(frozen=True)
class Readout:
    """The tokens a classification head reads.

    Attributes:
        prefix: tokens before the patch grid (CLS, distillation, registers).
        rows: special tokens read directly (their rows are averaged).
        pooled: ``"patches"`` if the head also reads the mean of the patch tokens, ``"all"`` the mean of every
            token, ``None`` neither. Rows and the pooled mean weigh equally.
        probe: dotted path, from the base model, of an attention-pooling head's ``nn.MultiheadAttention`` (one
            learned query over every token): its attention row, integrated as a block's, gives each image's row
            weights (:class:`ProbeViTAdapter`); the static weights are the fallback where that row is all zero.
    """

    prefix: int = 1
    rows: tuple[int, ...] = (0,)
    pooled: str | None = None
    probe: str | None = None

    def weights(self, tokens: int) -> torch.Tensor:
        """``[tokens]`` float32 weights (summing to 1) of the rollout rows that form the map."""
        parts = []
        for row in self.rows:
            part = torch.zeros(tokens)
            part[row] = 1.0
            parts.append(part)
        if self.pooled is not None:
            part = torch.zeros(tokens)
            part[self.prefix if self.pooled == "patches" else 0 :] = 1.0
            parts.append(part / part.sum())
        return torch.stack(parts).mean(dim=0)


def _vision_config(model: nn.Module) -> Any:
    config = config_of(model)
    return getattr(config, "vision_config", None) or config


def _mean_pooling_or_cls(model: nn.Module) -> Readout:
    """BEiT's pooler: the mean of the patch tokens when ``config.use_mean_pooling``, else the CLS token."""
    return Readout(rows=(), pooled="patches") if config_of(model).use_mean_pooling else Readout()


READOUTS: dict[str, Callable[[nn.Module], Readout]] = {
    "vit": lambda model: Readout(),
    "vit_msn": lambda model: Readout(),
    "deit": lambda model: Readout(prefix=2, rows=(0, 1) if hasattr(model, "distillation_classifier") else (0,)),
    "beit": _mean_pooling_or_cls,
    "data2vec-vision": _mean_pooling_or_cls,
    "dinov2": lambda model: Readout(pooled="patches"),
    "dinov2_with_registers": lambda model: Readout(
        prefix=1 + int(config_of(model).num_register_tokens), pooled="patches"
    ),
    "clip": lambda model: Readout(rows=(), pooled="patches"),
    "metaclip_2": lambda model: Readout(rows=(), pooled="patches"),
    "siglip": lambda model: Readout(prefix=0, rows=(), pooled="all"),
    "ijepa": lambda model: Readout(prefix=0, rows=(), pooled="all"),
    # The vision towers of zero-shot models (hf_iia.zeroshot.ZeroShotClassifier), read by the pooled output their
    # dual encoder scores: CLIP's (MetaCLIP 2's, AltCLIP's, Chinese-CLIP's, CLIPSeg's) is post_layernorm of the CLS
    # token (then visual_projection);
    # SigLIP's is an attention-pooling head: one learned probe attends over every token (no CLS), and only through that
    # attention do the tokens reach the embedding (no residual from any token), so its row is the readout.
    "clip_vision_model": lambda model: Readout(),
    "metaclip_2_vision_model": lambda model: Readout(),
    "altclip_vision_model": lambda model: Readout(),
    "chinese_clip_vision_model": lambda model: Readout(),
    "clipseg_vision_model": lambda model: Readout(),
    "siglip_vision_model": lambda model: Readout(prefix=0, rows=(), pooled="all", probe="head.attention"),
}
"""``config.model_type`` -> the tokens its ``...ForImageClassification`` head (or, for a ``..._vision_model`` tower,
its pooled output) reads (read from each modeling file)."""


@dataclass(frozen=True)
class HookedAttention:
    """Where a block's attention probabilities are hooked when its attention bypasses AttentionInterface.

    Attributes:
        attention: dotted path, from the block, of its self-attention module.
        dropout: dotted path, from that module, of the dropout it applies to the softmax output
            ``[N, heads, T, T]`` right before multiplying the values.
        eager: ``(module, class name)`` of the eager self-attention class, whose forward forms the probabilities
            and calls that dropout. A subclass that does not (the SDPA variant, which overrides only ``forward``)
            runs as this class for the duration of a call.
    """

    attention: str
    dropout: str
    eager: tuple[str, str]

    def eager_class(self) -> type[nn.Module]:
        return getattr(importlib.import_module(self.eager[0]), self.eager[1])


HOOKED_ATTENTION: dict[str, HookedAttention] = {
    "data2vec-vision": HookedAttention(
        "attention.attention",
        "dropout",
        ("transformers.models.data2vec.modeling_data2vec_vision", "Data2VecVisionSelfAttention"),
    ),
}
"""``config.model_type`` -> where its attention probabilities are hooked (types of :data:`READOUTS` whose
attention does not go through AttentionInterface; read from each modeling file)."""

BLOCK_PATHS = ("layers", "encoder.layer", "encoder.layers", "vision_model.encoder.layers")
"""Where the transformer blocks of the supported types live, relative to the base model."""


class ViTAdapter(AttentionAdapter):
    """Attention probabilities of every block; Gradient Rollout fuses them into the map.

    Levels (interpolated): the last block by default, or the blocks chosen with ``layer=``
    (indices or names such as ``"layers.11"``). Observed: every block.
    """

    family = VIT
    upsample_mode = "bilinear"

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec,
        *,
        blocks: Sequence[nn.Module],
        readout: Readout,
        patch_size: int,
        image_size: int | Sequence[int],
    ) -> None:
        super().__init__(model)
        self.readout = readout
        self.blocks: list[nn.Module] = list(blocks)
        self._taps = tuple(f"layers.{i}" for i in range(len(self.blocks)))
        names = {id(module): name for name, module in model.named_modules()}
        self._block_names = {names[id(block)]: tap for block, tap in zip(self.blocks, self._taps, strict=True)}
        self._levels = self._choose_levels(layer)
        self.patch_size = int(patch_size)
        self.image_size = image_size

    @property
    def special_tokens(self) -> int:
        """Tokens before the patch grid."""
        return self.readout.prefix

    def _choose_levels(self, layer: LayerSpec) -> tuple[str, ...]:
        """The blocks ``layer=`` picks (:func:`~hf_iia.adapters.base.resolve_layer`: an index, ``"layers.i"``, the
        block's own dotted name or the block), in forward order: every block's attention is observed anyway."""
        if layer is None:
            return (self._taps[-1],)
        blocks = dict(zip(self._taps, self.blocks, strict=True))
        chosen = resolve_layer(self.model, layer, blocks, what="blocks", aliases=self._block_names)
        return tuple(sorted(chosen, key=self._taps.index))

    @property
    def taps(self) -> tuple[str, ...]:
        return self._taps

    @property
    def levels(self) -> tuple[str, ...]:
        return self._levels

    def observed(self, levels: Sequence[str]) -> tuple[str, ...]:
        return self._taps

    def installed(self, run: TapRun, active: Sequence[str]) -> Installation:
        return Installation(lambda installation: self._install(installation, run, active))

    def _install(self, installation: Installation, run: TapRun, active: Sequence[str]) -> None:
        """Route the ``active`` blocks to ``run`` until ``installation`` is undone (see :meth:`installed`)."""
        owners = {}
        for tap, block in zip(self._taps, self.blocks, strict=True):
            if tap in active:
                owners.update({id(module): tap for module in block.modules()})
                remove_on_undo(installation, block.register_forward_pre_hook(_expand_hook(run, tap), with_kwargs=True))
        token = _ACTIVE.set((owners, run))
        installation.undo(lambda: _ACTIVE.reset(token))
        _register_attention(installation)
        _switch_attention(installation, self.model, ATTENTION_NAME)

    def check_input(self, pixel_values: torch.Tensor) -> None:
        """Channels as the config says, and exactly ``config.image_size`` (position embeddings are not interpolated)."""
        super().check_input(pixel_values)
        size = self.image_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(pixel_values.shape[2:]) != (height, width):
            raise ImageInputError(
                f"pixel_values is {pixel_values.shape[2]}x{pixel_values.shape[3]} but {type(self.model).__name__} takes "
                f"{height}x{width} inputs (config.image_size); preprocess images with the model's image processor"
            )

    def not_reached(self, taps: Sequence[str]) -> IIAError:
        return AttentionNotReachableError(
            f"the attention probabilities of {list(taps)} never reached the '{ATTENTION_NAME}' attention function; "
            f"{type(self.model).__name__} does not route its attention through transformers' AttentionInterface. "
            "Use a model that does (ViT, DeiT) or explain a CNN-style layer with layer="
        )

    def to_map(self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int]) -> torch.Tensor:
        return self.rollout_map(integrals, input_size, gradient_rollout)

    @property
    def block_taps(self) -> tuple[str, ...]:
        return self._taps

    def block_predictions(self) -> Installation:
        """See :meth:`AttentionAdapter.block_predictions`. A forward hook on every block detaches the output it hands
        to the next block and keeps the original; the last block hands on its own output followed by the kept ones,
        ``[blocks * N, T, D]`` block-major, so the model's own tail (final norm, readout, head: whatever the family's
        :class:`Readout` stands for) forms every block's prediction; :meth:`logits` takes them apart."""

        def setup(installation: Installation) -> None:
            kept: list[torch.Tensor] = []
            for index, block in enumerate(self.blocks):
                hook = _prediction_hook(kept, first=index == 0, last=index == len(self.blocks) - 1)
                remove_on_undo(installation, block.register_forward_hook(hook))
            token = _PREDICTIONS.set(len(self.blocks))
            installation.undo(lambda: _PREDICTIONS.reset(token))

        return Installation(setup)

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model's logits ``[N, classes]``; under :meth:`block_predictions`, with the gradient of the sum of every
        block's prediction (the value stays the last block's, the model's own)."""
        logits = super().logits(pixel_values)
        blocks = _PREDICTIONS.get()
        if blocks is None:
            return logits
        if logits.shape[0] % blocks:
            raise AttentionNotReachableError(
                f"{type(self.model).__name__} returned {logits.shape[0]} rows for the outputs of its {blocks} blocks "
                "stacked as one batch, so its head does not read each row on its own; use method='gradient_rollout'"
            )
        per_block = logits.view(blocks, -1, logits.shape[1])  # [blocks, N, classes], the last block first
        earlier = per_block[1:]
        # value: the model's logits; gradient: that of every block's prediction (each reaches its own block only)
        return per_block[0] + (earlier - earlier.detach()).sum(dim=0)

    def patch_grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Rows and columns of patch tokens for an input of ``(height, width)`` pixels; the sequence holds
        ``rows * columns + special_tokens`` tokens."""
        return input_size[0] // self.patch_size, input_size[1] // self.patch_size

    def rollout_map(
        self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int], rollout: Rollout
    ) -> torch.Tensor:
        """Fuse per-block integrals ``{tap: [B, heads, T, T]}`` with ``rollout`` into patch-grid maps ``[B, h, w]``."""
        return self._read(integrals, self.readout.weights(integrals[self._taps[0]].shape[-1]), input_size, rollout)

    def _read(
        self, integrals: dict[str, torch.Tensor], readout: torch.Tensor, input_size: tuple[int, int], rollout: Rollout
    ) -> torch.Tensor:
        """:meth:`rollout_map` with the row weights ``readout`` ``[T]``."""
        blocks = [integrals[tap] for tap in self._taps]
        relevance = rollout(blocks, readout.to(blocks[0].device, blocks[0].dtype), self.special_tokens)
        height, width = self.patch_grid(input_size)
        if relevance.shape[1] != height * width:
            raise AttentionNotReachableError(
                f"{relevance.shape[1]} patch tokens do not form the {height}x{width} grid of a {input_size} input "
                f"with patch size {self.patch_size}; the model has special tokens this adapter does not know"
            )
        return relevance.reshape(-1, height, width)

    def token_grid(self) -> FeatureMapAdapter | None:
        return TokenGridAdapter(self)


TOKEN_GRID = Family(name="token grid", description="patch tokens entering a block [B, D, h, w]; channel sum, bilinear")

# (rows, columns) of the patch grid of the input the token-grid adapter's model is running on.
_GRID: ContextVar[tuple[int, int] | None] = ContextVar("hf_iia_token_grid", default=None)


class TokenGridAdapter(FeatureMapAdapter):
    """The patch tokens entering one block of a :class:`ViTAdapter`'s model, read as a feature map ``[N, D, h, w]``:
    the special tokens (:attr:`ViTAdapter.special_tokens`) are left out and the rest laid on the patch grid in the
    raster order the patch embedding makes (the order the rollout maps are read in). What the CAM methods explain
    on attention models, as pytorch-grad-cam does with a ``reshape_transform``; the block is the attention adapter's
    level (``layer=``, default the last: the tokens the last attention mixes for the readout)."""

    family = TOKEN_GRID
    upsample_mode = "bilinear"

    def __init__(self, attention: ViTAdapter) -> None:
        super().__init__(attention.model)
        self.attention = attention
        self.default_internal_batch_size = attention.default_internal_batch_size

    @property
    def taps(self) -> tuple[str, ...]:
        return self.attention.taps

    @property
    def levels(self) -> tuple[str, ...]:
        return self.attention.levels  # several blocks are refused by the one-layer methods

    def observed(self, levels: Sequence[str]) -> tuple[str, ...]:
        return (levels[-1],)

    def check_input(self, pixel_values: torch.Tensor) -> None:
        self.attention.check_input(pixel_values)

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        token = _GRID.set(self.attention.patch_grid((int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))))
        try:
            return self.attention.logits(pixel_values)
        finally:
            _GRID.reset(token)

    def installed(self, run: TapRun, active: Sequence[str]) -> Installation:
        def setup(installation: Installation) -> None:
            for tap in active:
                block = self.attention.blocks[self.taps.index(tap)]
                hook = _token_grid_hook(run, tap, self.attention.special_tokens)
                remove_on_undo(installation, block.register_forward_pre_hook(hook, with_kwargs=True))

        return Installation(setup)

    def to_map(self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int]) -> torch.Tensor:
        return self.level_map(integrals, input_size, LEVEL_FUSIONS["deepest"])

    def level_map(
        self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int], fusion: LevelFusion
    ) -> torch.Tensor:
        return fusion.fuse([channel_sum(integrals[tap]) for tap in sorted(integrals, key=self.taps.index)], "bilinear")


def _token_grid_hook(run: TapRun, tap: str, special: int):
    """Pre-hook: the block's input tokens ``[N, T, D]`` go to the engine as ``[N, D, h, w]`` (patches only) and the
    substituted grid comes back in the token layout, the special tokens untouched."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        grid = _GRID.get()
        hidden = args[0] if args else kwargs["hidden_states"]
        if grid is None or hidden.dim() != 3 or hidden.shape[1] - special != grid[0] * grid[1]:
            raise AttentionNotReachableError(
                f"the input of block {tap!r} is {list(hidden.shape)}, not [N, {special} special + "
                f"{'?' if grid is None else grid[0] * grid[1]} patch tokens, D] on the patch grid, so its tokens form "
                "no feature map; use a rollout method (gae, attention_rollout) or iia"
            )
        (hidden,) = run.expand(tap, hidden)
        rows, _, width = hidden.shape
        patches = hidden[:, special:].transpose(1, 2).reshape(rows, width, *grid)
        patches = run.represent(tap, patches)
        hidden = torch.cat([hidden[:, :special], patches.flatten(2).transpose(1, 2)], dim=1)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    return hook


ACTIVATIONS: tuple[type[nn.Module], ...] = tuple(
    {cast(type[nn.Module], entry[0] if isinstance(entry, tuple) else entry) for entry in ACT2CLS.values()}
)
"""The element-wise activation modules of ``transformers`` (``ACT2FN``), which AttnLRP's identity rule covers."""

RELEVANCE_TYPES = frozenset({"vit", "deit"})
"""The ``config.model_type`` values whose every operation AttnLRP's rules cover (read from each modeling file):
normalisations are ``nn.LayerNorm``, non-linearities outside the attention are :data:`ACTIVATIONS` modules, the
attention goes through AttentionInterface, and no other product of two activations is formed."""


class RelevanceViTAdapter(ViTAdapter, RelevanceAdapter):
    """A :class:`ViTAdapter` of a :data:`RELEVANCE_TYPES` model, which can also run it under AttnLRP's rules."""

    def relevance_rules(self) -> Installation:
        """LayerNorm and activation hooks (:mod:`.lrp`) and the uniform rule in the attention function."""

        def setup(installation: Installation) -> None:
            for module in self.model.modules():
                if isinstance(module, nn.LayerNorm):
                    remove_on_undo(installation, module.register_forward_hook(layer_norm_rule))
                elif isinstance(module, ACTIVATIONS):
                    remove_on_undo(installation, module.register_forward_hook(identity_rule))
            token = _RELEVANCE.set(True)
            installation.undo(lambda: _RELEVANCE.reset(token))
            _register_attention(installation)
            _switch_attention(installation, self.model, ATTENTION_NAME)

        return Installation(setup)


class HookedViTAdapter(ViTAdapter):
    """Attention probabilities reached by a forward hook on the dropout module each block applies to them.

    ``dropouts[i]`` is block ``i``'s dropout on its softmax output. :meth:`explicit_attention` makes every block
    form its probabilities explicitly for the call (an eager class instead of SDPA); each hook checks that it
    sees probabilities ``[N, heads, T, T]`` (rows summing to 1) and refuses otherwise.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec,
        *,
        dropouts: Sequence[nn.Module],
        eager: type[nn.Module] | None = None,
        attentions: Sequence[nn.Module] = (),
        **kwargs: object,
    ) -> None:
        super().__init__(model, layer, **kwargs)  # type: ignore[arg-type]
        self.dropouts = list(dropouts)
        self._eager = eager
        self._attentions = list(attentions)

    def installed(self, run: TapRun, active: Sequence[str]) -> Installation:
        def setup(installation: Installation) -> None:
            self.explicit_attention(installation)
            for tap, block, dropout in zip(self._taps, self.blocks, self.dropouts, strict=True):
                if tap in active:
                    remove_on_undo(
                        installation, block.register_forward_pre_hook(_expand_hook(run, tap), with_kwargs=True)
                    )
                    remove_on_undo(installation, dropout.register_forward_hook(probabilities_hook(run, tap)))

        return Installation(setup)

    def explicit_attention(self, installation: Installation) -> None:
        """Run every self-attention module as the eager class (it forms the probabilities) until ``installation``
        is undone."""
        for module in self._attentions:
            cls = type(module)
            if self._eager is not None and cls is not self._eager:
                if not issubclass(cls, self._eager):
                    raise AttentionNotReachableError(
                        f"{cls.__name__} is not a variant of {self._eager.__name__}, so its attention "
                        "probabilities cannot be formed explicitly; pass layer="
                    )
                # The SDPA subclass adds no state, only a forward that fuses the softmax.
                module.__class__ = self._eager
                installation.undo(functools.partial(setattr, module, "__class__", cls))

    def not_reached(self, taps: Sequence[str]) -> IIAError:
        return AttentionNotReachableError(
            f"the attention probabilities of {list(taps)} never reached the dropout module on the softmax output of "
            f"{type(self.model).__name__}; pass layer= the dotted name of a module whose output is a feature map"
        )


class ProbeViTAdapter(ViTAdapter):
    """A :class:`ViTAdapter` whose model pools its tokens with an attention-pooling head (``probe``: its
    ``nn.MultiheadAttention``, one learned query over every token): the map reads each image's rollout rows with the
    head's own attention row, which is observed (tap :data:`PROBE_TAP`, ``[N, heads, 1, T]``) and integrated as the
    blocks' are: the readout Gradient Rollout would give a block with one query row and no residual."""

    PROBE_TAP = "head"

    def __init__(self, model: nn.Module, layer: LayerSpec, *, probe: nn.Module, **kwargs: object) -> None:
        if not isinstance(probe, nn.MultiheadAttention) or not _plain_attention(probe):
            raise AttentionNotReachableError(
                f"the pooling head of {type(model).__name__} ({type(probe).__name__}) is not a batch-first "
                "nn.MultiheadAttention with packed, biased projections, so its attention row cannot be formed "
                "explicitly; pass layer= a module whose output is a feature map"
            )
        super().__init__(model, layer, **kwargs)  # type: ignore[arg-type]
        self.probe = probe

    @property
    def taps(self) -> tuple[str, ...]:
        return (*self._taps, self.PROBE_TAP)

    def observed(self, levels: Sequence[str]) -> tuple[str, ...]:
        return self.taps

    def _install(self, installation: Installation, run: TapRun, active: Sequence[str]) -> None:
        super()._install(installation, run, active)
        if self.PROBE_TAP in active:
            hook = _probe_hook(run, self.PROBE_TAP)
            remove_on_undo(installation, self.probe.register_forward_hook(hook, with_kwargs=True))

    def rollout_map(
        self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int], rollout: Rollout
    ) -> torch.Tensor:
        """Each image's rollout read with its head row ``integrals[PROBE_TAP]`` ``[B, heads, 1, T]`` (head mean,
        negative parts dropped, normalised to sum 1); the static readout where that row is all zero."""
        if self.PROBE_TAP not in integrals:
            return super().rollout_map(integrals, input_size, rollout)
        rows = integrals[self.PROBE_TAP].mean(dim=1)[:, 0, :].clamp_min(0)  # [B, T]
        total = rows.sum(dim=-1, keepdim=True)
        static = self.readout.weights(rows.shape[-1]).to(rows.device, rows.dtype).expand_as(rows)
        weights = torch.where(total > 0, rows / total.clamp_min(torch.finfo(rows.dtype).tiny), static)
        maps = [
            self._read(
                {tap: integrals[tap][index : index + 1] for tap in self._taps}, weights[index], input_size, rollout
            )
            for index in range(rows.shape[0])
        ]
        return torch.cat(maps) if maps else super().rollout_map(integrals, input_size, rollout)


def _plain_attention(module: nn.MultiheadAttention) -> bool:
    """Whether ``module``'s forward is the plain computation :func:`_probe_hook` repeats."""
    return bool(
        module.batch_first
        and module._qkv_same_embed_dim
        and module.in_proj_bias is not None
        and module.bias_k is None
        and not module.add_zero_attn
    )


def _probe_hook(run: TapRun, tap: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Forward hook on a pooling head's ``nn.MultiheadAttention`` (no mask, or an additive float ``attn_mask``
    ``[N * heads, Q, T]``, as SigLIP2's head passes its padding mask): its output formed again from explicit
    probabilities ``[N, heads, Q, T]``, which pass through ``run`` at ``tap`` (what ``nn.MultiheadAttention``
    computes, with its softmax written out so the engine can read and weigh it)."""

    def hook(
        module: nn.MultiheadAttention, args: tuple, kwargs: dict, output: tuple
    ) -> tuple[torch.Tensor, torch.Tensor]:
        query, key, value = (list(args) + [kwargs.get(name) for name in ("query", "key", "value")][len(args) :])[:3]
        mask = kwargs.get("attn_mask")
        batch, queries, keys = query.shape[0], query.shape[1], key.shape[1]
        additive = mask is None or (
            mask.is_floating_point() and mask.shape == (batch * module.num_heads, queries, keys)
        )
        if kwargs.get("key_padding_mask") is not None or len(args) > 3 or not additive:
            raise AttentionNotReachableError(
                "the pooling head was called with a key padding mask or a mask other than an additive float "
                "[N * heads, queries, keys] one (SigLIP2's padding mask), which hf-iia does not repeat"
            )
        heads, width = module.num_heads, module.embed_dim
        weight, bias = module.in_proj_weight, module.in_proj_bias
        q, k, v = (
            nn.functional.linear(x, weight[i * width : (i + 1) * width], bias[i * width : (i + 1) * width])
            for i, x in enumerate((query, key, value))
        )

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], x.shape[1], heads, width // heads).transpose(1, 2)

        scores = split(q) @ split(k).transpose(2, 3) * (width // heads) ** -0.5
        if mask is not None:  # nn.MultiheadAttention adds a float mask to the scores, heads batch-major
            scores = scores + mask.view(batch, heads, queries, keys)
        probs = torch.softmax(scores, dim=-1)
        probs = nn.functional.dropout(probs, p=module.dropout, training=module.training)
        probs = run.represent(tap, probs)
        context = (probs @ split(v)).transpose(1, 2).reshape(query.shape[0], query.shape[1], width)
        return module.out_proj(context), probs.mean(dim=1)

    return hook


def probabilities_hook(run: TapRun, tap: str) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor]:
    """Forward hook on a dropout applied to attention probabilities: check them, hand them to ``run`` at ``tap``.

    A tensor that is not ``[N, heads, T, T]`` with rows summing to 1 is not the probabilities (another module,
    or dropout active in training mode): refused rather than integrated as if it were.
    """

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        square = output.dim() == 4 and output.shape[-1] == output.shape[-2]
        if not square or not torch.allclose(output.detach().sum(-1), output.new_ones(()), atol=1e-3):
            raise AttentionNotReachableError(
                f"the tensor hooked as the attention probabilities of {tap!r} ({list(output.shape)}) is not "
                "[N, heads, T, T] with rows summing to 1; pass layer= a module whose output is a feature map"
            )
        return run.represent(tap, output)

    return hook


def vit_adapter(model: nn.Module, layer: LayerSpec) -> ViTAdapter:
    """The adapter of a transformers model whose head reads the tokens in :data:`READOUTS` (through
    :data:`HOOKED_ATTENTION` where its attention bypasses AttentionInterface)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    blocks = None
    for path in BLOCK_PATHS:
        with contextlib.suppress(AttributeError):
            blocks = base.get_submodule(path)
            break
    if not isinstance(blocks, nn.ModuleList):
        raise AttentionNotReachableError(
            f"cannot find the transformer blocks of {type(model).__name__} (looked for {list(BLOCK_PATHS)})"
        )
    vision = _vision_config(model)
    model_type = str(config_of(model).model_type)
    common = dict(readout=READOUTS[model_type](model), patch_size=vision.patch_size, image_size=vision.image_size)
    hooked = HOOKED_ATTENTION.get(model_type)
    if hooked is None and common["readout"].probe is not None:
        return ProbeViTAdapter(
            model, layer, blocks=list(blocks), probe=base.get_submodule(common["readout"].probe), **common
        )
    if hooked is None:
        adapter = RelevanceViTAdapter if model_type in RELEVANCE_TYPES else ViTAdapter
        return adapter(model, layer, blocks=list(blocks), **common)
    attentions = [block.get_submodule(hooked.attention) for block in blocks]
    return HookedViTAdapter(
        model,
        layer,
        blocks=blocks,
        attentions=attentions,
        eager=hooked.eager_class(),
        dropouts=[attention.get_submodule(hooked.dropout) for attention in attentions],
        **common,
    )


register_adapter(*READOUTS)(vit_adapter)


def _prediction_hook(
    kept: list[torch.Tensor], *, first: bool, last: bool
) -> Callable[[nn.Module, tuple, object], object]:
    """Forward hook of :meth:`ViTAdapter.block_predictions` on one block (output: hidden states ``[N, T, D]``, or a
    tuple that starts with them): keep the output and hand the next block a detached copy; the last block hands on
    ``[its output, kept outputs...]`` concatenated along the batch."""

    def hook(module: nn.Module, args: tuple, output: object) -> object:
        hidden = output[0] if isinstance(output, tuple) else output
        if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
            raise AttentionNotReachableError(
                f"a block of the model returned {type(hidden).__name__}, not hidden states [N, T, D], so its "
                "intermediate prediction cannot be read; use method='gradient_rollout'"
            )
        if first:
            kept.clear()  # a new forward pass
        if last:
            replaced = torch.cat([hidden, *kept])
            kept.clear()
        else:
            kept.append(hidden)
            replaced = hidden.detach()
        return (replaced, *output[1:]) if isinstance(output, tuple) else replaced

    return hook


def _expand_hook(run: TapRun, tap: str):
    """Pre-hook: let the engine repeat the rows of every batch-shaped tensor entering the block."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = args[0] if args else kwargs["hidden_states"]
        rows = hidden.shape[0]
        names = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == rows]
        keys = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == rows]
        expanded = run.expand(tap, *(args[i] for i in names), *(kwargs[k] for k in keys))
        positional = list(args)
        for i, tensor in zip(names, expanded[: len(names)], strict=True):
            positional[i] = tensor
        kwargs = {**kwargs, **dict(zip(keys, expanded[len(names) :], strict=True))}
        return tuple(positional), kwargs

    return hook
