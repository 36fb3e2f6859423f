"""Model-state checks of the "leave the model as found" guarantees.

:func:`snapshot` records everything about a model (and torch's global state) an explainer promises to leave as it
found it; :func:`assert_unchanged` compares two snapshots exactly; :func:`hook_count` counts the hooks left behind.
"""

from __future__ import annotations

import copy
import signal
from typing import Any

import torch
import transformers
from torch import nn
from torch.nn.modules import module as module_hooks


def hook_count(model: nn.Module) -> int:
    """Forward, forward-pre and backward hooks registered on any submodule of ``model``."""
    return sum(
        len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
        for module in model.modules()
    )


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything about ``model`` (and torch's global state) an explainer promises to leave as it found it."""
    config = getattr(model, "config", None)
    return {
        "hooks": {
            name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
            for name, m in model.named_modules()
        },
        "training": {name: m.training for name, m in model.named_modules()},
        "classes": {name: type(m) for name, m in model.named_modules()},
        "fused_attn": {name: m.fused_attn for name, m in model.named_modules() if hasattr(m, "fused_attn")},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grads": {name: p.grad for name, p in model.named_parameters()},
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
        "attn": getattr(config, "_attn_implementation", None),
        "config": copy.deepcopy(vars(config)) if config is not None else None,  # private fields included
        "global_hooks": (
            tuple(module_hooks._global_forward_hooks),
            tuple(module_hooks._global_forward_pre_hooks),
            tuple(module_hooks._global_backward_hooks),
        ),
        "attention_registry": tuple(transformers.AttentionInterface._global_mapping),
        "grad_enabled": torch.is_grad_enabled(),
        "signal_handlers": {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)},
    }


def assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Compare two :func:`snapshot` results exactly (parameters and buffers with ``torch.equal``)."""
    for key in (
        "hooks",
        "global_hooks",
        "training",
        "classes",
        "fused_attn",
        "requires_grad",
        "attn",
        "config",
        "attention_registry",
        "grad_enabled",
        "signal_handlers",
    ):
        assert before[key] == after[key], f"{key} changed"
    assert all(grad is None for grad in after["grads"].values()), "parameter .grad was written"
    for key in ("params", "buffers"):
        assert before[key].keys() == after[key].keys()
        for name, value in before[key].items():
            assert torch.equal(value, after[key][name]), f"{key} {name} changed"
