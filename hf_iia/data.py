"""🤗 datasets integration: explain every row of a ``Dataset`` or a streaming ``IterableDataset``.

Two entry points:

* :func:`explain_batch_fn` returns a function for ``dataset.map(fn, batched=True,
  batch_size=...)`` that explains one batch of rows at a time;
* :func:`explain_dataset` applies it with the settings that keep memory flat in the
  length of the dataset (see below) and returns the dataset with four new columns.

The new columns (named ``prefix + name``):

========== ============================== ==============================================
column     feature                        value
========== ============================== ==============================================
heatmap    ``Array2D((H, W), "float16")`` ``Explanation.heatmap`` at the model's input
                                          resolution ``[H, W]``, in ``[0, 1]``, stored as
                                          float16 (2 bytes a pixel: 98 KiB at 224 x 224;
                                          absolute rounding error below ``2.5e-4``)
target     ``int64``                      the explained class index
label      ``string``                     its ``id2label`` name (``None`` without labels)
score      ``float32``                    the model's probability of ``target``
========== ============================== ==============================================

float16 arrays rather than PNG bytes: they read back as numpy without any decoding step
(``np.asarray(dataset.with_format("numpy")["heatmap"])`` is ``[N, H, W]``; numpy
formatting widens float16 to float32), keep more than 8 bits
of precision and need no colour-map convention; the model input size of an image
classifier is fixed, so the shape is known from the first row.

Memory stays flat in the dataset's length: rows are decoded, explained and written one
batch at a time (``writer_batch_size = batch_size``); a streaming ``IterableDataset`` is
explained lazily while it is iterated. An in-memory ``Dataset`` (e.g. built with
``Dataset.from_dict``) keeps its results in memory too, unless ``cache_file_name`` is
given; a ``Dataset`` backed by Arrow files writes them to its cache folder.

Images are decoded here rather than by ``datasets`` (the image column is read with
``datasets.Image(decode=False)``), so a missing or corrupt image raises a
:class:`DatasetImageError` that names the row, instead of a bare PIL error.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetColumnError, DatasetImageError, IIAError, ImageInputError
from .imaging import to_rgb

if TYPE_CHECKING:
    import datasets

    from .explainer import IIAExplainer

OUTPUT_COLUMNS: tuple[str, ...] = ("heatmap", "target", "label", "score")
"""The columns :func:`explain_batch_fn` adds, before ``prefix``."""

Batch = dict[str, list]
BatchFn = Callable[..., Batch]


def check_columns(
    columns: Sequence[str], image_column: str, target_column: str | None = None, added: Sequence[str] = ()
) -> None:
    """Raise :class:`DatasetColumnError` unless ``image_column`` (and ``target_column``) exist and none of ``added``."""
    for role, name in (("image", image_column), ("target", target_column)):
        if name is not None and name not in columns:
            raise DatasetColumnError(
                f"the dataset has no {role} column {name!r}; its columns are {sorted(columns)}. "
                f"Pass {role}_column= one of them"
            )
    clashes = [name for name in added if name in columns]
    if clashes:
        raise DatasetColumnError(
            f"the dataset already has column(s) {clashes}, which explaining would overwrite; pass prefix= "
            f"(e.g. prefix='iia_' adds {['iia_' + name for name in OUTPUT_COLUMNS]}) or remove those columns first"
        )


def decode_image(value: Any, row: int | str) -> Image.Image:
    """One dataset cell -> RGB PIL image.

    Accepts what a ``datasets.Image(decode=False)`` column holds (``{"bytes", "path"}``),
    a decoded PIL image, a file path or a numpy array ``[H, W]`` / ``[H, W, C]``.
    ``row`` (an index or a description) is named in the :class:`DatasetImageError`.
    """
    if value is None:
        raise DatasetImageError(f"row {row}: the image is missing (None); drop or fix that row")
    try:
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
            if data is None and not path:
                raise DatasetImageError(f"row {row}: the image has neither bytes nor a path; drop or fix that row")
            if data is None:
                return to_rgb(path)
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()
                return to_rgb(opened)
        if isinstance(value, list):  # an Array2D / Array3D cell arrives as nested lists
            value = np.asarray(value)
        return to_rgb(value)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        where = f" ({value.get('path')})" if isinstance(value, dict) and value.get("path") else ""
        raise DatasetImageError(f"row {row}{where}: the image cannot be decoded ({error})") from None
    except DatasetImageError:
        raise
    except ImageInputError as error:
        raise DatasetImageError(f"row {row}: {error}") from None


def explain_batch_fn(
    explainer: IIAExplainer, image_column: str = "image", target_column: str | None = None, *, prefix: str = ""
) -> BatchFn:
    """A function for ``dataset.map(fn, batched=True, batch_size=...)`` that explains each batch.

    Args:
        explainer: the :class:`~hf_iia.IIAExplainer` (or comparison method) to run.
        image_column: the column holding the images (decoded or ``Image(decode=False)`` dicts,
            paths or arrays).
        target_column: a column with the class to explain for each row (index or label
            name); ``None`` explains each row's top-1 class.
        prefix: put in front of the added column names.

    Returns:
        ``fn(batch, indices=None) -> {prefix + "heatmap": [H, W] float16 arrays, ... "target",
        "label", "score": lists}`` for ``B`` rows; pass ``with_indices=True`` to ``map`` for
        row numbers in error messages.
    """
    added = [prefix + name for name in OUTPUT_COLUMNS]

    def explain_batch(batch: Batch, indices: Sequence[int] | None = None) -> Batch:
        check_columns(list(batch), image_column, target_column, added)
        cells = batch[image_column]
        rows = indices if indices is not None else [f"{i} of the batch" for i in range(len(cells))]
        images = [decode_image(cell, row) for cell, row in zip(cells, rows)]
        targets = batch[target_column] if target_column is not None else None
        explanations = explainer(images, target=targets)
        return {
            added[0]: [explanation.heatmap.astype(np.float16) for explanation in explanations],
            added[1]: [explanation.target for explanation in explanations],
            added[2]: [explanation.label for explanation in explanations],
            added[3]: [explanation.score for explanation in explanations],
        }

    return explain_batch


def explain_dataset(
    explainer: IIAExplainer,
    dataset: datasets.Dataset | datasets.IterableDataset,
    image_column: str = "image",
    target_column: str | None = None,
    *,
    batch_size: int = 16,
    prefix: str = "",
    cache_file_name: str | os.PathLike | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Explain every row of ``dataset`` and return it with the columns heatmap, target, label, score.

    Args:
        explainer: the explainer to run on each batch.
        dataset: a ``datasets.Dataset`` (explained now, with a progress bar) or a streaming
            ``datasets.IterableDataset`` (explained lazily while you iterate it).
        image_column: the column holding the images.
        target_column: a column with the class to explain per row (e.g. the ground-truth
            ``"label"``); ``None`` explains each row's top-1 class.
        batch_size: rows per explainer call (and per write).
        prefix: put in front of the added column names, e.g. ``"iia_"`` when the dataset
            already has a ``label`` column.
        cache_file_name: for a ``Dataset``: the Arrow file to write the result to (keeps an
            in-memory dataset's result out of memory).

    Returns:
        A dataset of the same kind with the original columns plus ``prefix`` + heatmap
        (``Array2D((H, W), "float16")``, the map ``[H, W]`` at model input size; nested float16 lists when the
        processor's output size depends on the image), target
        (``int64``), label (``string``) and score (``float32``).

    Raises:
        DatasetColumnError: a named column is missing, or an added column exists already.
        DatasetImageError: a row's image is missing or undecodable (raised while mapping;
            for a streaming dataset, while iterating).
    """
    import datasets

    if batch_size < 1:
        raise IIAError(f"batch_size must be a positive int, got {batch_size}")
    added = [prefix + name for name in OUTPUT_COLUMNS]
    if dataset.column_names is not None:
        check_columns(dataset.column_names, image_column, target_column, added)
    features = dataset.features
    if features is not None and isinstance(features.get(image_column), datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    first = decode_image(_first_image(dataset, image_column), 0)
    height, width = explainer.preprocess([first])[0].shape[-2:]
    # A processor whose output size follows the aspect ratio gives maps of several shapes: store them as nested
    # lists, which any shape can be read back from, instead of a fixed Array2D.
    turned = explainer.preprocess([first.transpose(Image.Transpose.ROTATE_90).resize((first.height + 7, first.width))])
    fixed = tuple(turned[0].shape[-2:]) == (height, width)
    heatmap_feature = (
        datasets.Array2D(shape=(height, width), dtype="float16")
        if fixed
        else datasets.Sequence(datasets.Sequence(datasets.Value("float16")))
    )
    if features is not None:
        features = datasets.Features(
            {
                **features,
                added[0]: heatmap_feature,
                added[1]: datasets.Value("int64"),
                added[2]: datasets.Value("string"),
                added[3]: datasets.Value("float32"),
            }
        )
    options: dict[str, Any] = {}
    if isinstance(dataset, datasets.Dataset):
        options = {
            "writer_batch_size": batch_size,
            "cache_file_name": os.fspath(cache_file_name) if cache_file_name is not None else None,
            "new_fingerprint": uuid.uuid4().hex,  # the explainer holds a model and a lock: not hashable
            "load_from_cache_file": False,
            "desc": "explaining",
        }
    return dataset.map(
        explain_batch_fn(explainer, image_column, target_column, prefix=prefix),
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        features=features,
        **options,
    )


def _first_image(dataset: datasets.Dataset | datasets.IterableDataset, image_column: str) -> Any:
    """The image cell of the first row (to learn the model input size); raises on an empty dataset."""
    for row in dataset.take(1):
        check_columns(list(row), image_column)
        return row[image_column]
    raise IIAError("the dataset has no rows; there is nothing to explain")
