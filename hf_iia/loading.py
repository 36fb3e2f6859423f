"""Safe loading of Hugging Face image classifiers and their processors.

Safe by default: ``trust_remote_code=False``, safetensors weights only. A checkpoint that
only has pickle weights (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) is refused unless the
caller passes ``allow_pickle=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from .errors import CheckpointError, IIAError, UnsafeCheckpointError, UnsupportedModelError

if TYPE_CHECKING:  # transformers and torch load on first use: the CLI's source check runs without them
    import torch
    from transformers import PreTrainedModel

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
HUB_PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hub's host accepts a connection within ``timeout`` seconds (``False`` when offline mode is on)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def check_source(source: str | os.PathLike, kind: str = "checkpoint") -> None:
    """Fail fast, with the fix, when ``source`` is neither a local folder nor reachable on the Hub.

    A local folder passes. A path-like name (``./x``, ``/x``, ``a/b/c``, ``~/x``) that does not exist is reported
    as a missing folder at once. A Hub id passes when it is in the local cache or the Hub answers within
    :data:`HUB_PROBE_TIMEOUT_S`; otherwise the error names ``HF_HUB_OFFLINE`` and local folders, instead of the
    retries a download would make.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise CheckpointError(f"{text} is a file; a {kind} is a folder (or a Hub id)")
    if text.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(text):
        raise CheckpointError(f"{kind} folder {text} does not exist (looked in {Path.cwd()})")
    marker = "config.json" if kind == "checkpoint" else "README.md"
    repo_type = "model" if kind == "checkpoint" else "dataset"
    if isinstance(try_to_load_from_cache(text, marker, repo_type=repo_type), str):
        return
    if not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub cannot be reached"
        example = " (`hf-iia demo` writes one: hf-iia-demo/efficientnet_lite0)" if kind == "checkpoint" else ""
        raise CheckpointError(
            f"{text!r} is not a local folder (no such folder in {Path.cwd()}) and not in the local Hub cache, and "
            f"{why}. Pass the path of a local {kind} folder{example}, or download it while online; set "
            "HF_HUB_OFFLINE=1 to use only the local cache"
        )


def load_model(
    source: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> PreTrainedModel:
    """``AutoModelForImageClassification.from_pretrained(source)`` with safe defaults (see :func:`check_source`)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForImageClassification

    check_source(source)
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
        if not allow_pickle:
            _refuse_pickle_shards(folder)
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


def _refuse_pickle_shards(folder: Path) -> None:
    """Refuse a sharded checkpoint whose index names pickle shards (a decoy ``.safetensors`` beside them would
    otherwise pass the folder check while the loader reads the pickles)."""
    for index in folder.glob("*.index.json"):
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except (OSError, ValueError, AttributeError):
            raise UnsafeCheckpointError(f"{index} is not a readable shard index; refused") from None
        shards = sorted({str(shard) for shard in weight_map.values() if not str(shard).endswith(".safetensors")})
        if shards:
            raise UnsafeCheckpointError(
                f"{index.name} in {folder} points at pickle shards {shards}; loading pickle can run arbitrary code. "
                "Convert the checkpoint to safetensors, or pass allow_pickle=True if you trust its source"
            )


def checkpoint_fingerprint(source: str | os.PathLike) -> str | None:
    """A SHA-256 over the weights, config and processor files of a checkpoint: a local folder, or the cached
    snapshot of a Hub id (``None`` when neither exists): what a resumable run compares to know it is still
    explaining the same model."""
    from huggingface_hub import try_to_load_from_cache

    folder = Path(source)
    if not folder.is_dir():
        cached = try_to_load_from_cache(os.fspath(source), "config.json")
        if not isinstance(cached, str):
            return None
        folder = Path(cached).parent
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (
            path.suffix in (".safetensors", ".bin", ".json") or path.name.endswith(_PICKLE_SUFFIXES)
        ):
            digest.update(path.name.encode())
            with path.open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def load_processor(source: str | os.PathLike, *, trust_remote_code: bool = False):
    """``AutoImageProcessor.from_pretrained(source)``, or ``None`` when the checkpoint has none."""
    from transformers import AutoImageProcessor
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    # transformers warns that the torchvision backend is unavailable and falls back to PIL, which processes the same
    # images; the warning is noise in every run, so it is silenced for this call only.
    logging.set_verbosity_error()
    try:
        return AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError):
        return None
    finally:
        logging.set_verbosity(verbosity)


def check_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device``; raises :class:`IIAError` for a malformed one or one this machine lacks.

    Imports torch only (not transformers), so the CLI checks ``--device`` before the heavy imports.
    """
    if device is None:
        return None
    import torch

    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise IIAError(
            f"device {device!r} is not a torch device ({error}); use 'cpu', 'cuda', 'cuda:1', 'mps', ..."
        ) from None
    available: dict[str, Callable[[], bool]] = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device.type in available and not available[device.type]():
        raise IIAError(
            f"device {str(device)!r} was asked for, but torch finds no {device.type} device on this machine; "
            "use device='cpu' (or leave device unset to take the best available)"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise IIAError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
