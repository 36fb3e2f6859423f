"""Tiny real models for the tests (conftest fixtures and test_guarantees, test_bad_input, test_safety).

Every Hugging Face model comes from :mod:`hf_iia.tools.tiny`: built from a real ``transformers`` config with random
weights, saved with ``save_pretrained`` (plus an image processor) into a folder and
loaded back through the public API (``IIAExplainer(folder)``). Nothing is mocked.
"""

from __future__ import annotations

import copy
import functools
import tempfile
from pathlib import Path

import torch
import transformers
from torch import nn
from torch.nn.modules import module as module_hooks

from hf_iia import IIAExplainer
from hf_iia.tools.tiny import SIZE, build_tiny, save_tiny

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

KINDS = ("vit", "deit", "resnet", "convnext")

BUILDERS = {kind: functools.partial(build_tiny, kind) for kind in KINDS}
"""The hardening tests' models: ``BUILDERS[kind]()`` (2 blocks / stages, the 4 labels of :data:`LABELS`)."""

_ROOT = Path(tempfile.mkdtemp(prefix="hf_iia_hardening_"))


@functools.lru_cache(maxsize=None)
def checkpoint(kind: str) -> Path:
    """A saved tiny checkpoint folder of ``kind`` (built once per test session)."""
    return save_tiny(kind, _ROOT / kind)


def explainer(kind: str, **options) -> IIAExplainer:
    """A fresh explainer (and so a fresh model) loaded from the saved ``kind`` checkpoint, on CPU."""
    options.setdefault("steps", 2)
    options.setdefault("progress", False)
    options.setdefault("device", "cpu")
    return IIAExplainer(str(checkpoint(kind)), **options)


def pixels(batch: int = 2, seed: int = 0) -> torch.Tensor:
    """``[batch, 3, 32, 32]`` seeded random normalised inputs."""
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


class SmallCNN(nn.Module):
    """A real plain-PyTorch classifier (conv features -> ReLU -> pool -> linear) for ``layer=`` tests."""

    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(8, classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.features(pixel_values).relu().mean(dim=(2, 3))
        return self.classifier(self.dropout(pooled))


class NaNLogits(SmallCNN):
    """A real classifier whose logits are NaN (a broken checkpoint, e.g. overflowed weights)."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().forward(pixel_values) * float("nan")


class ConstantLogits(SmallCNN):
    """A classifier whose logits do not depend on the explained layer (zero head weights): the integrand is all zero."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.classifier.weight.zero_()


def hook_count(model: nn.Module) -> int:
    """Forward and forward-pre hooks (with and without kwargs) registered on any submodule."""
    return sum(
        len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
        for module in model.modules()
    )


def snapshot(model: nn.Module) -> dict:
    """Everything about ``model`` the explainer promises to leave as it found it."""
    config = getattr(model, "config", None)
    return {
        "hooks": {name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
                  for name, m in model.named_modules()},
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grads": {name: p.grad for name, p in model.named_parameters()},
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
        "attn": getattr(config, "_attn_implementation", None),
        "config": copy.deepcopy(vars(config)) if config is not None else None,  # private fields included
        "global_hooks": (tuple(module_hooks._global_forward_hooks), tuple(module_hooks._global_forward_pre_hooks),
                         tuple(module_hooks._global_backward_hooks)),
        "attention_registry": tuple(transformers.AttentionInterface._global_mapping),
        "grad_enabled": torch.is_grad_enabled(),
    }


def assert_unchanged(before: dict, after: dict) -> None:
    """Compare two :func:`snapshot` results exactly (parameters and buffers with ``torch.equal``)."""
    for key in ("hooks", "global_hooks", "training", "requires_grad", "attn", "config", "attention_registry",
                "grad_enabled"):
        assert before[key] == after[key], f"{key} changed"
    assert all(grad is None for grad in after["grads"].values()), "parameter .grad was written"
    for key in ("params", "buffers"):
        assert before[key].keys() == after[key].keys()
        for name, value in before[key].items():
            assert torch.equal(value, after[key][name]), f"{key} {name} changed"
