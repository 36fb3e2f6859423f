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
:class:`DatasetImageError` that names the row, instead of a bare PIL error. They are decoded
with the column's own ``datasets.Image`` feature (its ``mode``, EXIF orientation), so the
model sees the image the dataset shows: an ``Image(mode="L")`` column is explained in grey
(replicated to RGB for an RGB model, as a grey PIL image or file is).

A ``ClassLabel`` target column is read by name: each of its names is matched to the model's
``id2label`` (as a label-name target is, see :meth:`IIAExplainer.__call__`), so a dataset
whose classes are ordered differently from the model's is explained for the right classes;
names that cannot be matched one-to-one raise :class:`DatasetLabelError`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetColumnError, DatasetImageError, DatasetLabelError, IIAError, ImageInputError, TargetError
from .imaging import to_rgb
from .labels import label_index

if TYPE_CHECKING:
    import datasets

    from .explainer import IIAExplainer

OUTPUT_COLUMNS: tuple[str, ...] = ("heatmap", "target", "label", "score")
"""The columns :func:`explain_batch_fn` adds, before ``prefix``."""

Batch = dict[str, Any]
"""Column name -> a list of ``B`` values (a batch), or one value (a row of a map without ``batched=True``)."""
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


def decode_image(value: Any, row: int | str, mode: str | None = None) -> Image.Image:
    """One dataset cell -> RGB PIL image.

    Accepts what a ``datasets.Image(decode=False)`` column holds (``{"bytes", "path"}``,
    decoded as ``datasets.Image(mode=mode)`` decodes it: EXIF orientation applied, then
    converted to ``mode``), a decoded PIL image, a file path or a numpy array ``[H, W]`` /
    ``[H, W, C]``. ``row`` (an index or a description) is named in the :class:`DatasetImageError`.
    """
    if value is None:
        raise DatasetImageError(f"row {row}: the image is missing (None); drop or fix that row")
    try:
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
            if data is None and not path:
                raise DatasetImageError(f"row {row}: the image has neither bytes nor a path; drop or fix that row")
            return to_rgb(_decode_cell({"bytes": data, "path": path}, mode))
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


def _decode_cell(cell: dict[str, Any], mode: str | None) -> Image.Image:
    """A ``{"bytes", "path"}`` cell decoded by ``datasets.Image(mode=mode)`` itself, so the image is the one the
    dataset shows when it decodes the column."""
    import datasets

    try:
        return datasets.Image(mode=mode).decode_example(cell)
    except FileNotFoundError:
        raise ImageInputError(f"image file not found: {cell['path']!r}") from None


def undecoded_images(
    dataset: datasets.Dataset | datasets.IterableDataset, column: str
) -> tuple[datasets.Dataset | datasets.IterableDataset, str | None]:
    """``dataset`` with its ``datasets.Image`` column ``column`` left undecoded (``{"bytes", "path"}`` cells, so
    :func:`decode_image` names a bad row), and the mode the feature decodes in (``Image(mode="L")``; ``None``: as
    stored). A column of another feature is left as it is."""
    import datasets

    feature = dataset.features.get(column) if dataset.features is not None else None
    if not isinstance(feature, datasets.Image):
        return dataset, None
    return dataset.cast_column(column, datasets.Image(mode=feature.mode, decode=False)), feature.mode


def class_label_indices(explainer: IIAExplainer, names: Sequence[str], column: str) -> list[int]:
    """The model's class index for each name of a ``ClassLabel`` column (``[len(names)]``: ``ClassLabel`` value
    ``i`` is class ``result[i]`` of the model).

    Names in the model's order are the identity; otherwise each name is matched as a label-name target is (exactly,
    then ignoring case, then one of the comma-separated synonyms of an ImageNet label). A model with more classes
    than the dataset is fine (a dataset of some of its classes).

    Raises:
        DatasetLabelError: the model has no ``id2label``, a name matches no class or several, or two names match one
            class; the message names them and how to align the dataset with the model.
    """
    labels = explainer.id2label
    fix = (
        f"align the dataset with the model (dataset = dataset.align_labels_with_mapping("
        f"explainer.model.config.label2id, {column!r})), or pass a target column of the model's class indices "
        f"(dataset.cast_column({column!r}, datasets.Value('int64')) if its values are those already)"
    )
    if not labels:
        raise DatasetLabelError(
            f"target column {column!r} is a ClassLabel (names {list(names)[:5]}...), but the model has no id2label "
            f"to match them to, so its values cannot be taken as the model's classes; {fix}"
        )
    if [labels.get(index) for index in range(len(names))] == list(names):
        return list(range(len(names)))
    indices: list[int] = []
    unmatched: list[str] = []
    for name in names:
        try:
            indices.append(label_index(labels, name))
        except TargetError as error:
            unmatched.append(f"{name!r} ({error})")
    shared = sorted({labels[i] for i in indices if indices.count(i) > 1})
    if unmatched or shared:
        problems = [f"names without one matching class: {'; '.join(unmatched)}"] if unmatched else []
        if shared:
            problems.append(f"several names match each of the model's classes {shared}")
        raise DatasetLabelError(
            f"the ClassLabel names of target column {column!r} do not match the model's id2label one-to-one "
            f"({'; '.join(problems)}); {fix}"
        )
    return indices


def _as_model_targets(values: Sequence[Any], indices: Sequence[int], column: str, rows: Sequence[int | str]) -> list:
    """``ClassLabel`` values -> the model's class indices through ``indices`` (:func:`class_label_indices`); a null
    value stays ``None`` (its top-1 class)."""
    targets: list[int | None] = []
    for value, row in zip(values, rows, strict=True):
        if value is None:
            targets.append(None)
        elif isinstance(value, (int, np.integer)) and 0 <= value < len(indices):
            targets.append(indices[int(value)])
        else:
            unlabeled = " (-1 is datasets' 'no label')" if value == -1 else ""
            raise DatasetLabelError(
                f"row {row}: target column {column!r} holds {value!r}{unlabeled}, not one of its ClassLabel's "
                f"{len(indices)} classes; filter those rows out or pass target_column=None to explain the top-1 class"
            )
    return targets


def _is_row(batch: Mapping[str, Any], indices: Sequence[int] | int | None) -> bool:
    """Whether ``map`` passed one row (no ``batched=True``) rather than a batch.

    ``Dataset.map`` says so by the type it passes (a lazy row or batch), ``with_indices=True`` by an int index. A
    plain dict (``IterableDataset.map``, numpy format) is a batch when every column holds a list (an array, in numpy
    format) of rows: a column holding anything else (a PIL image, a ``{"bytes", "path"}`` dict, a number) is one
    row's value. A plain-dict row whose every column holds an array cannot be told from a batch.
    """
    from datasets.formatting.formatting import LazyBatch, LazyRow

    if isinstance(batch, (LazyRow, LazyBatch)):
        return isinstance(batch, LazyRow)
    if indices is not None:
        return not isinstance(indices, Sequence)
    rows = (list, tuple, np.ndarray)
    return any(not isinstance(value, rows) for value in batch.values())


def _features_of(batch: Mapping[str, Any]) -> datasets.Features | None:
    """The features ``Dataset.map`` formats its batches with (its ``LazyBatch`` keeps its formatter), or ``None``:
    lets a function built without ``features=`` still read a ``ClassLabel`` target column by name."""
    return getattr(getattr(batch, "formatter", None), "features", None)


def explain_batch_fn(
    explainer: IIAExplainer,
    image_column: str = "image",
    target_column: str | None = None,
    *,
    prefix: str = "",
    features: datasets.Features | None = None,
) -> BatchFn:
    """A function for ``dataset.map(fn, batched=True, batch_size=...)`` that explains each batch.

    Without ``batched=True`` ``map`` passes one row at a time; the function then explains that
    row (one explainer call per row: slower) and returns one value per column.

    Args:
        explainer: the :class:`~hf_iia.IIAExplainer` (or comparison method) to run.
        image_column: the column holding the images (decoded or ``Image(decode=False)`` dicts,
            paths or arrays).
        target_column: a column with the class to explain for each row (index or label
            name, or a ``ClassLabel``, read by name: see :func:`class_label_indices`);
            ``None`` explains each row's top-1 class.
        prefix: put in front of the added column names.
        features: the dataset's ``features``: an ``Image(mode=...)`` column's undecoded cells
            are decoded in that mode, and a ``ClassLabel`` target column is read by name
            (checked now). Without it, ``Dataset.map`` batches carry their features; pass it
            for an ``IterableDataset`` whose target column is a ``ClassLabel``.

    Returns:
        ``fn(batch, indices=None) -> {prefix + "heatmap": [H, W] float16 arrays, ... "target",
        "label", "score": lists}`` for ``B`` rows; pass ``with_indices=True`` to ``map`` for
        row numbers in error messages.

    Raises:
        DatasetLabelError: the ``ClassLabel`` target column's names do not match the model's.
    """
    import datasets

    added = [prefix + name for name in OUTPUT_COLUMNS]
    targets_of: dict[tuple[str, ...], list[int]] = {}  # ClassLabel names -> the model's class indices

    def read_features(known: datasets.Features | None) -> tuple[str | None, list[int] | None]:
        """The image column's decoding mode and the target column's ClassLabel -> model mapping (if any)."""
        image = known.get(image_column) if known is not None else None
        target = known.get(target_column) if known is not None and target_column is not None else None
        mapping = None
        if isinstance(target, datasets.ClassLabel) and target_column is not None:
            names = tuple(target.names)
            if names not in targets_of:
                targets_of[names] = class_label_indices(explainer, names, target_column)
            mapping = targets_of[names]
        return (image.mode if isinstance(image, datasets.Image) else None), mapping

    read_features(features)  # a mismatching ClassLabel fails here, before any row is explained

    def explain_batch(batch: Batch, indices: Sequence[int] | int | None = None) -> Batch:
        check_columns(list(batch), image_column, target_column, added)
        single = _is_row(batch, indices)
        cells = [batch[image_column]] if single else batch[image_column]
        rows: list[int | str]
        if isinstance(indices, int):
            rows = [indices]
        elif indices is not None:
            rows = list(indices)
        else:
            rows = ["(unbatched)"] if single else [f"{i} of the batch" for i in range(len(cells))]
        mode, mapping = read_features(features if features is not None else _features_of(batch))
        images = [decode_image(cell, row, mode) for cell, row in zip(cells, rows, strict=True)]
        targets = None
        if target_column is not None:
            targets = [batch[target_column]] if single else list(batch[target_column])
            if mapping is not None:
                targets = _as_model_targets(targets, mapping, target_column, rows)
        explanations = explainer(images, target=targets)
        columns = {
            added[0]: [explanation.heatmap.astype(np.float16) for explanation in explanations],
            added[1]: [explanation.target for explanation in explanations],
            added[2]: [explanation.label for explanation in explanations],
            added[3]: [explanation.score for explanation in explanations],
        }
        return {name: values[0] for name, values in columns.items()} if single else columns

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
        DatasetLabelError: the ``ClassLabel`` target column's names do not match the model's
            ``id2label`` one-to-one (see :func:`class_label_indices`).
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
    batch_fn = explain_batch_fn(explainer, image_column, target_column, prefix=prefix, features=features)
    dataset, mode = undecoded_images(dataset, image_column)
    first = decode_image(_first_image(dataset, image_column), 0, mode)
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
        batch_fn,
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
