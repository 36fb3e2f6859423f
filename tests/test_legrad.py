"""LeGrad (``method="legrad"``) against a naive loop written from the paper's equations, on every attention family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_iia import IIAExplainer
from hf_iia.adapters.base import extract_logits
from hf_iia.adapters.vit import READOUTS, ViTAdapter
from hf_iia.errors import MethodError
from hf_iia.testing import IMAGE_CLASSIFICATION_TYPES, assert_unchanged, save_tiny, save_tiny_timm, snapshot
from hf_iia.testing.zero_shot import ZERO_SHOT_KINDS, save_zero_shot

torch.set_num_threads(1)

NAFLEX = ("siglip2",)
"""Types whose tower reads per-image inputs after its blocks (NaFlex masks): LeGrad is refused for them."""
TIMM_VITS = ("test_vit", "deit_tiny_distilled_patch16_224", "eva02_tiny_patch14_224")
FAMILIES = [
    *(model_type for model_type in READOUTS if model_type in IMAGE_CLASSIFICATION_TYPES),
    *(f"timm:{name}" for name in TIMM_VITS),
    *(f"zero_shot:{kind}" for kind in ZERO_SHOT_KINDS if kind not in NAFLEX),
]
"""Every attention family: the image-classification types of the ViT adapter's readout table, the timm ViTs (class
token, distillation token, Eva's rotary attention) and the zero-shot vision towers (SigLIP's attention-pooling head)."""
ZERO_SHOT_LABELS = ["a cat", "a dog", "a car"]

TOLERANCE = 1e-4
"""Maps are min-max normalised (range 1): the one-backward LeGrad and the per-block loop sum the same float32
gradients in a different order, so they agree to float32 rounding, far below this fraction of the map's range."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``family -> saved tiny checkpoint`` (cached per module)."""
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            path = tmp_path_factory.mktemp(family.replace(":", "_"))
            if family.startswith("timm:"):
                cache[family] = save_tiny_timm(family.removeprefix("timm:"), path)
            elif family.startswith("zero_shot:"):
                cache[family] = save_zero_shot(family.removeprefix("zero_shot:"), path)
            else:
                cache[family] = save_tiny(family, path)
        return cache[family]

    return get


class _Recorder:
    """A tap run that substitutes nothing and keeps every block's attention probabilities ``[N, heads, T, T]``."""

    def __init__(self) -> None:
        self.attention: dict[str, torch.Tensor] = {}

    def expand(self, tap: str, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tensors

    def represent(self, tap: str, rep: torch.Tensor) -> torch.Tensor:
        rep = rep if rep.requires_grad else rep.detach().requires_grad_()
        self.attention[tap] = rep
        return rep


def _pass_through(module: nn.Module, args: tuple, kwargs: dict, output: object) -> object:
    """Forward hook making a block the identity: it returns its input hidden states (in its output's format)."""
    hidden = args[0] if args else kwargs["hidden_states"]
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def paper_relevance(grads: list[torch.Tensor], prefix: int) -> torch.Tensor:
    """The paper's aggregation of the per-block gradients ds_l/dA_l ``[B, heads, T, T]``: ReLU, mean over heads,
    mean over query rows, the patch (key) columns after ``prefix`` special tokens, mean over blocks -> ``[B, P]``."""
    return torch.stack([grad.clamp(min=0).mean(dim=1).mean(dim=1)[:, prefix:] for grad in grads]).mean(dim=0)


def naive_legrad(adapter: ViTAdapter, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """The paper's LeGrad, one block at a time: for block l, a forward pass whose later blocks pass their input on
    (so the model's own norm and head read block l's output: s_l), the gradient of s_l alone at A_l, ReLU, mean over
    heads and query rows, the patch columns; the mean over blocks, on the patch grid; bilinear to the input, min-max.
    ``x`` ``[B, C, H, W]`` -> ``[B, H, W]``."""
    model, blocks = adapter.model, adapter.blocks
    grads = []
    for index, tap in enumerate(adapter.block_taps):
        recorder = _Recorder()
        handles = [block.register_forward_hook(_pass_through, with_kwargs=True) for block in blocks[index + 1 :]]
        try:
            with torch.enable_grad(), adapter.installed(recorder, adapter.block_taps):
                logits = extract_logits(model(x))
                score = logits[torch.arange(len(targets)), torch.tensor(targets)].sum()
                (grad,) = torch.autograd.grad(score, recorder.attention[tap])
        finally:
            for handle in handles:
                handle.remove()
        grads.append(grad)
    relevance = paper_relevance(grads, adapter.special_tokens)
    rows, columns = adapter.patch_grid((x.shape[2], x.shape[3]))
    grid = relevance.reshape(-1, 1, rows, columns)
    upsampled = F.interpolate(grid, size=x.shape[2:], mode="bilinear", align_corners=False).squeeze(1)
    flat = upsampled.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    return (upsampled - low) / (high - low)


def _inputs(adapter: ViTAdapter, batch: int, seed: int = 0) -> torch.Tensor:
    size = adapter.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_legrad_equals_the_per_block_loop_and_batch_equals_single(folder, family):
    """One forward and one backward pass give every block's own dS_l/dA_l: the maps equal the naive per-block loop
    (separate forward/backward of each s_l) within TOLERANCE of the map's range, for a batch of two images with
    different targets, and each image explained alone gives its row of the batch."""
    labels = {"candidate_labels": ZERO_SHOT_LABELS} if family.startswith("zero_shot:") else {}
    explainer = IIAExplainer(str(folder(family)), method="legrad", device="cpu", progress=False, **labels)
    adapter = explainer.adapter
    assert isinstance(adapter, ViTAdapter)
    x = _inputs(adapter, 2)
    targets = [1, 2]
    # a zero-shot explainer's model wraps the dual encoder (and caches the prompts' embeddings): check the encoder
    model = explainer.model.model if labels else explainer.model
    before = snapshot(model)
    ours = explainer.attribute(x, target=targets)
    assert_unchanged(before, snapshot(model))  # hooks, attention implementation, modes, weights
    expected = naive_legrad(adapter, x, targets)
    assert ours.shape == expected.shape == (2, *x.shape[2:])
    torch.testing.assert_close(ours, expected, atol=TOLERANCE, rtol=0)
    for row in range(2):
        alone = explainer.attribute(x[row : row + 1], target=targets[row])
        torch.testing.assert_close(alone[0], ours[row], atol=TOLERANCE, rtol=0)


def test_the_gradient_cut_between_blocks_matters(folder):
    """Without the cut, one backward pass of sum_m s_m gives at A_l the sum over m >= l of ds_m/dA_l (every later
    prediction depends on A_l too): that map differs from the per-block loop by far more than the tolerance, so the
    equality test above tells the two apart."""
    explainer = IIAExplainer(folder("vit"), method="legrad", device="cpu", progress=False)
    adapter = explainer.adapter
    assert isinstance(adapter, ViTAdapter)
    x = _inputs(adapter, 1, seed=3)
    uncut = {tap: 0.0 for tap in adapter.block_taps}
    for index in range(len(adapter.block_taps)):  # s_m's gradient at every A_l, l <= m
        recorder = _Recorder()
        handles = [
            block.register_forward_hook(_pass_through, with_kwargs=True) for block in adapter.blocks[index + 1 :]
        ]
        try:
            with torch.enable_grad(), adapter.installed(recorder, adapter.block_taps):
                score = extract_logits(adapter.model(x))[0, 0]
                earlier = adapter.block_taps[: index + 1]
                grads = torch.autograd.grad(score, [recorder.attention[tap] for tap in earlier])
        finally:
            for handle in handles:
                handle.remove()
        for tap, grad in zip(earlier, grads, strict=True):
            uncut[tap] = uncut[tap] + grad
    relevance = torch.stack([g.clamp(min=0).mean(dim=(1, 2)) for g in uncut.values()]).mean(0)
    relevance = relevance[:, adapter.special_tokens :].reshape(-1, 1, *adapter.patch_grid(tuple(x.shape[2:])))
    relevance = F.interpolate(relevance, size=x.shape[2:], mode="bilinear", align_corners=False).squeeze(1)
    relevance = (relevance - relevance.min()) / (relevance.max() - relevance.min())
    ours = explainer.attribute(x, target=0)
    torch.testing.assert_close(ours, naive_legrad(adapter, x, [0]), atol=TOLERANCE, rtol=0)
    assert (ours - relevance).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize("family", ["vit", "deit", "dinov2_with_registers", "timm:test_vit"])
def test_legrad_depends_on_the_target_class(folder, family):
    explainer = IIAExplainer(folder(family), method="legrad", device="cpu", progress=False)
    x = _inputs(explainer.adapter, 1, seed=1)
    first, second = explainer.attribute(x, target=0), explainer.attribute(x, target=1)
    assert (first - second).abs().max() > 0.05  # a twentieth of the map's range


def _torchvision_attention(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``EncoderBlock`` in eval mode written out, with its attention probabilities explicit:
    ``x`` ``[B, T, D]`` -> (output ``[B, T, D]``, probabilities ``[B, heads, T, T]``)."""
    attention = block.self_attention
    batch, tokens, width = x.shape
    heads = attention.num_heads
    query, key, value = F.linear(block.ln_1(x), attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    query, key, value = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (query, key, value))
    probs = torch.softmax(query @ key.transpose(-1, -2) * (width // heads) ** -0.5, dim=-1)
    mixed = attention.out_proj((probs @ value).transpose(1, 2).reshape(batch, tokens, width))
    x = x + mixed
    return x + block.mlp(block.ln_2(x)), probs


def test_the_paper_loop_equals_torchcam_on_a_torchvision_vit():
    """Cross-check of the reference itself: torchcam 0.5's LeGrad on a random torchvision ViT (every block a target,
    its score projection the model's own head on the class token: encoder.ln, token 0, heads) against the same
    per-block loop (:func:`paper_relevance`) over a hand-written forward of that ViT. hf-iia cannot load a torchvision
    ViT as an attention model (it has no transformers config), so this checks the equations the tests above hold
    hf-iia's LeGrad to."""
    torchcam = pytest.importorskip("torchcam.methods")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    ).eval()
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: every gradient would be zero
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    targets = [1, 3]
    blocks = list(model.encoder.layers)

    def head(tokens: torch.Tensor) -> torch.Tensor:
        return model.heads(model.encoder.ln(tokens[:, 0]))

    with torchcam.LeGrad(model, blocks, score_projection=head) as extractor:
        model(x)
        (theirs,) = extractor(targets)
    tokens = model._process_input(x)
    tokens = torch.cat([model.class_token.expand(x.shape[0], -1, -1), tokens], dim=1) + model.encoder.pos_embedding
    grads = []
    for block in blocks:
        tokens, probs = _torchvision_attention(block, tokens)
        score = head(tokens)[torch.arange(2), torch.tensor(targets)].sum()
        grads.append(torch.autograd.grad(score, probs, retain_graph=True)[0])
    ours = paper_relevance(grads, prefix=1).reshape(2, 4, 4)
    assert (ours.flatten(1).amax(1) > ours.flatten(1).amin(1)).all()  # maps with contrast, not all zero
    flat = ours.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    torch.testing.assert_close((ours - low) / (high - low), theirs, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("family", ["siglip2", "zero_shot:siglip2"])
def test_legrad_is_refused_where_the_tail_reads_per_image_inputs(folder, family):
    """SigLIP2's pooling reads each image's NaFlex mask after the blocks; the blocks' stacked rows have none, so
    LeGrad is refused with the methods that do explain it, never run on unmasked rows."""
    labels = {"candidate_labels": ZERO_SHOT_LABELS} if family.startswith("zero_shot:") else {}
    with pytest.raises(MethodError, match="gradient_rollout"):
        IIAExplainer(folder(family), method="legrad", progress=False, **labels)
