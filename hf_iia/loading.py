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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .errors import CheckpointError, IIAError, UnsafeCheckpointError, UnsupportedModelError

if TYPE_CHECKING:  # transformers and torch load on first use: the CLI's source check runs without them
    import torch
    from torch import nn
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
    zero_shot: bool = False,
) -> PreTrainedModel:
    """``AutoModelForImageClassification.from_pretrained(source)`` with safe defaults (see :func:`check_source`);
    with ``zero_shot=True``, ``AutoModelForZeroShotImageClassification`` (CLIP, SigLIP, ...) under the same rules.

    A checkpoint that does not load the model its config describes is refused with a :class:`CheckpointError` that
    names the file or field: a ``config.json`` that is not JSON or has non-integer ``id2label`` keys, a config that
    cannot build a model (a zero ``patch_size``, a head count that does not divide the width, ...), weights whose
    shapes disagree with the config (e.g. a classifier with another number of rows than ``id2label`` has labels),
    or weights that lack some of the model's parameters (they would be left random).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForImageClassification, AutoModelForZeroShotImageClassification

    auto = AutoModelForZeroShotImageClassification if zero_shot else AutoModelForImageClassification
    check_source(source)
    folder = Path(source)
    if folder.is_dir():
        if (folder / "config.json").is_file():  # a missing one is named by transformers' own error
            read_config_file(folder / "config.json")
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
        # Mismatched shapes are collected (not raised as a bare RuntimeError) and refused below with their names.
        model, info = auto.from_pretrained(
            source,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
        )
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise UnsafeCheckpointError(
                f"{source} needs custom code from its repository; pass trust_remote_code=True only if you trust it"
            ) from error
        raise UnsupportedModelError(
            f"{source} is not an image classifier that {auto.__name__} can load ({error})"
            + ("" if zero_shot else "; for a zero-shot model (CLIP, SigLIP, ...) pass candidate_labels=")
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
    except (ArithmeticError, RuntimeError, TypeError, IndexError, KeyError, AttributeError) as error:
        # Building the model from its config failed (e.g. a division by a zero patch_size).
        first = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"the config.json of {source} describes a model that cannot be built ({type(error).__name__}: "
            f"{first}){_suspect_fields(_config_dict(folder, source))}; fix config.json, or re-save the checkpoint "
            "with model.save_pretrained(folder)"
        ) from error
    if not zero_shot and _is_zero_shot_checkpoint(model.config.to_dict()):  # before the missing head is reported
        raise UnsupportedModelError(
            f"{source} is a zero-shot image classifier ({model.config.architectures[0]}): it has no classifier head, "
            "it scores candidate labels. Pass candidate_labels=[...] (hf-iia explain --labels)"
        )
    _check_loading_info(source, model, info)
    return model


def _is_zero_shot_checkpoint(config: dict[str, Any]) -> bool:
    """Whether ``config.json``'s fields name an ``AutoModelForZeroShotImageClassification`` class as its model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES

    architectures = config.get("architectures")
    names = MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(str(config.get("model_type")))
    classes = (names,) if isinstance(names, str) else tuple(names or ())
    return bool(isinstance(architectures, list) and architectures and architectures[0] in classes)


def read_config_file(path: Path) -> dict[str, Any]:
    """The fields of a checkpoint's ``config.json``, read as JSON (no transformers).

    Raises:
        CheckpointError: it is not a JSON object, or its ``id2label`` does not map class indices to names
            (transformers would fail with a bare ``int()`` error).
    """
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error}); fix it, or write it again with model.config.save_pretrained(folder)"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(config).__name__}, not an object of config fields")
    labels = config.get("id2label")
    if labels is None:
        return config
    if not isinstance(labels, dict):
        raise CheckpointError(
            f"{path}: id2label must map class indices to names, got a {type(labels).__name__}; fix it to "
            '{"0": "first label", "1": ...} (and label2id to its inverse)'
        )
    bad = [key for key in labels if not re.fullmatch(r"\d+", str(key))]
    if bad:
        raise CheckpointError(
            f"{path}: id2label keys must be class indices ('0', '1', ...), got {bad[:3]}; fix id2label (and "
            "label2id) so that each index of the classifier's output names its label"
        )
    return config


def _config_dict(folder: Path, source: str | os.PathLike) -> dict[str, Any]:
    """The fields of the checkpoint's config (``{}`` when they cannot be read)."""
    try:
        from transformers import PretrainedConfig

        config, _ = PretrainedConfig.get_config_dict(folder if folder.is_dir() else os.fspath(source))
        return config
    except (OSError, ValueError):
        return {}


def _suspect_fields(config: dict[str, Any]) -> str:
    """``"; suspect fields: patch_size=0, ..."``: size and count fields of ``config`` (and its ``*_config`` parts)
    that are zero or negative, and a width that its head count does not divide; ``""`` when none is."""
    found = []
    parts = [("", config)] + [(f"{k}.", v) for k, v in config.items() if k.endswith("_config") and isinstance(v, dict)]
    for prefix, part in parts:
        for key, value in part.items():
            sizes = value if isinstance(value, list) else [value]
            shaped = key.endswith(("_size", "_sizes", "_dim", "_heads", "_channels")) or key.startswith("num_")
            if (
                shaped
                and all(isinstance(v, int) and not isinstance(v, bool) for v in sizes)
                and any(v <= 0 for v in sizes)
            ):
                found.append(f"{prefix}{key}={value}")
        width, heads = part.get("hidden_size"), part.get("num_attention_heads")
        if isinstance(width, int) and isinstance(heads, int) and heads > 0 and width % heads:
            found.append(f"{prefix}hidden_size={width} is not a multiple of {prefix}num_attention_heads={heads}")
    return f"; suspect fields: {', '.join(found)}" if found else ""


def _check_loading_info(source: str | os.PathLike, model: PreTrainedModel, info: dict[str, Any]) -> None:
    """Refuse weights that do not fill the model: shapes that disagree with the config, or missing parameters
    (``from_pretrained`` would leave them random, and the maps would explain noise)."""
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        shown = ", ".join(
            f"{key}: weights {list(ours)} vs config {list(theirs)}" for key, ours, theirs in mismatched[:4]
        )
        labels = ""
        num_labels = getattr(model.config, "num_labels", None)
        if any(theirs and theirs[0] == num_labels and ours[:1] != theirs[:1] for _, ours, theirs in mismatched):
            labels = (
                f"; config.json's id2label has {num_labels} labels but the classifier weights have another number of "
                "rows: make id2label (and label2id) list exactly the classes the classifier was trained on"
            )
        raise CheckpointError(
            f"the weights of {source} do not fit the model its config.json describes ({len(mismatched)} tensor(s): "
            f"{shown}){labels}{_suspect_fields(model.config.to_dict())}; fix config.json so it matches the weights"
        )
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise CheckpointError(
            f"the weights of {source} lack {len(missing)} parameter(s) of {type(model).__name__} ({missing[:4]}); "
            "loading would leave them random. Use a checkpoint trained for image classification (a backbone-only "
            "checkpoint has no classifier), or re-save the complete model with save_pretrained"
        )


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
    """``AutoImageProcessor.from_pretrained(source)``, or ``None`` when the checkpoint has none.

    Raises:
        CheckpointError: a local folder's ``preprocessor_config.json`` exists but cannot be read (it would otherwise
            pass for a missing processor); one that needs remote code still gives ``None`` unless trusted.
    """
    from transformers import AutoImageProcessor
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    # transformers warns that the torchvision backend is unavailable and falls back to PIL, which processes the same
    # images; the warning is noise in every run, so it is silenced for this call only.
    logging.set_verbosity_error()
    try:
        return AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        written = Path(source) / "preprocessor_config.json"
        # A processor that needs the checkpoint's own code stays unloaded (the model still explains pixel_values).
        if written.is_file() and "custom code" not in str(error) and "trust_remote_code" not in str(error):
            raise CheckpointError(
                f"{written} cannot be read as an image processor ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); fix it, or pass processor="
            ) from error
        return None
    finally:
        logging.set_verbosity(verbosity)


def load_tokenizer(source: str | os.PathLike, *, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained(source)`` (what the zero-shot pipeline encodes the prompts with).

    Raises:
        CheckpointError: the checkpoint has no tokenizer, or it cannot be read.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"cannot load the tokenizer of {source} ({type(error).__name__}: {first}); a zero-shot model encodes its "
            "candidate labels with it: save it in the folder (tokenizer.save_pretrained(folder)) or pass processor= "
            "the model's AutoProcessor"
        ) from error


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


def unwrap(model: nn.Module) -> nn.Module:
    """The eager module behind ``torch.compile`` (``OptimizedModule``), ``nn.DataParallel`` and
    ``DistributedDataParallel`` wrappers: hooks and the attention function are installed on it, and a compiled
    graph would not run them (the maps would differ from the eager model's). A model with a compiled
    *submodule* is refused: its eager code is not the code that runs."""
    from torch import nn

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
