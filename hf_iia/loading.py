"""Safe loading of Hugging Face image classifiers and their processors.

Safe by default: ``trust_remote_code=False``, safetensors weights only. A checkpoint that
only has pickle weights (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) is refused unless the
caller passes ``allow_pickle=True``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel

from .errors import CheckpointError, UnsafeCheckpointError, UnsupportedModelError

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def load_model(
    source: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> PreTrainedModel:
    """``AutoModelForImageClassification.from_pretrained(source)`` with safe defaults."""
    folder = Path(source)
    if folder.is_dir():
        files = [p.name for p in folder.iterdir()]
        has_safetensors = any(name.endswith(".safetensors") for name in files)
        has_pickle = any(name.endswith(_PICKLE_SUFFIXES) for name in files)
        if has_pickle and not has_safetensors and not allow_pickle:
            raise UnsafeCheckpointError(
                f"{folder} holds only pickle weights ({[n for n in files if n.endswith(_PICKLE_SUFFIXES)]}); "
                "loading pickle can run arbitrary code. Convert the checkpoint to safetensors, or pass "
                "allow_pickle=True if you trust its source"
            )
    try:
        return AutoModelForImageClassification.from_pretrained(
            source,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise UnsafeCheckpointError(
                f"{source} needs custom code from its repository; pass trust_remote_code=True only if you trust it"
            ) from error
        raise UnsupportedModelError(
            f"{source} is not an image classifier that AutoModelForImageClassification can load ({error})"
        ) from error
    except pickle.UnpicklingError as error:  # transformers unpickles with weights_only=True: code is refused
        raise UnsafeCheckpointError(
            f"the pickle weights of {source} hold more than tensors (they could run code when loaded); refused even "
            f"with allow_pickle=True ({str(error).splitlines()[0]})"
        ) from error
    except (OSError, SafetensorError) as error:  # no such folder/repo, no weights file, corrupt weights, offline
        if not folder.exists() and (folder.is_absolute() or str(source).startswith(".")):
            raise CheckpointError(f"checkpoint folder {source} does not exist") from error
        hint = ""
        if not allow_pickle and "safetensors" in str(error):
            hint = " (a checkpoint with only pickle weights needs allow_pickle=True, if you trust its source)"
        raise CheckpointError(f"cannot load a checkpoint from {source}: {error}{hint}") from error


def load_processor(source: str | os.PathLike, *, trust_remote_code: bool = False):
    """``AutoImageProcessor.from_pretrained(source)``, or ``None`` when the checkpoint has none."""
    try:
        return AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError):
        return None
