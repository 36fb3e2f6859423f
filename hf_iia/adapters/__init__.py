"""Model-family adapters (one file per family) and their registry keyed by ``config.model_type``."""

from . import cnn, vit  # noqa: F401  (registers the adapters)
from .base import Adapter, TapRun, adapter_for, register_adapter, supported_model_types

__all__ = ["Adapter", "TapRun", "adapter_for", "register_adapter", "supported_model_types"]
