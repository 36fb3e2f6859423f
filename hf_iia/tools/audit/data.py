"""The audited rows: the dataset (synthetic, saved, image folder or Hub), its columns and its batches."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image

from ...data import DatasetColumnError, check_columns, undecoded_images
from ...errors import AuditError
from .config import AuditConfig

SYNTHETIC_DATASETS: dict[str, bool] = {"synthetic": False, "synthetic-shortcut": True}
"""Built-in dataset names -> whether the class-coloured corner patch is planted (:mod:`hf_iia.tools.synthetic`)."""


def load_audit_dataset(config: AuditConfig) -> datasets.Dataset | datasets.IterableDataset:
    """The first ``config.n`` rows of the configured dataset, with the image column left undecoded.

    Synthetic names are generated in memory; folders saved with ``save_to_disk`` are
    memory-mapped; image folders and Hub ids are streamed (nothing is cached on disk).
    """
    if config.n < 1 or config.batch_size < 1:
        raise AuditError(f"n and batch_size must be positive, got n={config.n}, batch_size={config.batch_size}")
    if config.dataset in SYNTHETIC_DATASETS:
        from ..synthetic import HELDOUT_START, make_dataset

        dataset = make_dataset(
            config.n,
            seed=config.seed,
            size=config.image_size,
            shortcut=SYNTHETIC_DATASETS[config.dataset],
            start=HELDOUT_START,
        )
    else:
        source = Path(config.dataset)
        if source.is_dir() and any((source / name).exists() for name in ("state.json", "dataset_dict.json")):
            loaded = _load_saved(source)
        elif source.is_dir():
            loaded = datasets.load_dataset("imagefolder", data_dir=os.fspath(source), streaming=True)
        else:
            from ...loading import check_source

            check_source(config.dataset, kind="dataset")  # a missing folder or an unreachable Hub fails at once
            loaded = datasets.load_dataset(config.dataset, streaming=True)
        dataset = _pick_split(loaded, config.split)
        dataset = (
            dataset.take(config.n)
            if isinstance(dataset, datasets.IterableDataset)
            else (dataset.select(range(min(config.n, len(dataset)))))
        )
    if isinstance(dataset, datasets.Dataset) and len(dataset) == 0:
        raise AuditError(
            f"the dataset {config.dataset}{f' (split {config.split})' if config.split else ''} has no rows; "
            "audit a dataset (or --split) that holds images"
        )
    return undecoded_images(dataset, config.image_column)[0]  # the feature keeps its mode: the auditor decodes with it


def _load_saved(source: Path) -> datasets.Dataset | datasets.DatasetDict:
    """``datasets.load_from_disk(source)``; a saved dataset (or split) with no rows, which ``datasets`` fails to
    load with a bare ``IndexError``, is an :class:`AuditError`."""
    try:
        return datasets.load_from_disk(os.fspath(source))
    except IndexError:
        states = [source / "state.json", *source.glob("*/state.json")]
        if any(state.is_file() and json.loads(state.read_text()).get("_data_files") == [] for state in states):
            raise AuditError(f"the saved dataset {source} has no rows; audit a dataset that holds images") from None
        raise


def _pick_split(loaded: Any, split: str | None) -> Any:
    """One split of a ``DatasetDict`` / ``IterableDatasetDict`` (``loaded`` itself if it is a single split)."""
    if not isinstance(loaded, dict):
        if split is not None:
            raise AuditError(f"the dataset has a single split; leave out --split (got {split!r})")
        return loaded
    choice = split or next((name for name in ("test", "validation", "train") if name in loaded), None)
    if choice is None and len(loaded) == 1:
        choice = next(iter(loaded))
    if choice not in loaded:
        raise AuditError(f"no split {choice!r} in the dataset; its splits are {sorted(loaded)}; pass --split")
    return loaded[choice]


def resolve_columns(config: AuditConfig, columns: Sequence[str]) -> tuple[str | None, str | None]:
    """``(label_column, mask_column)`` after defaults, checking that every named column exists."""
    label = config.label_column or ("label" if "label" in columns else None)
    mask = config.mask_column or ("mask" if config.dataset in SYNTHETIC_DATASETS else None)
    check_columns(columns, config.image_column, label)
    if mask is not None and mask not in columns:
        raise DatasetColumnError(f"the dataset has no mask column {mask!r}; its columns are {sorted(columns)}")
    return label, mask


def iter_batches(
    dataset: datasets.Dataset | datasets.IterableDataset, batch_size: int, wanted: Sequence[int]
) -> Iterator[tuple[int, dict[str, list]]]:
    """``(k, rows of batch k)`` for each ``k`` in ``wanted`` (ascending) that has rows.

    A ``Dataset`` is sliced directly; a streaming dataset is read from the start, skipping
    the rows of other batches (their images are not decoded).
    """
    if not wanted:
        return
    if isinstance(dataset, datasets.Dataset):
        for k in wanted:
            if k * batch_size < len(dataset):
                yield k, dataset[k * batch_size : (k + 1) * batch_size]
        return
    wanted_set, last = set(wanted), max(wanted)
    for k, rows in enumerate(dataset.iter(batch_size=batch_size)):
        if k in wanted_set:
            yield k, rows
        if k >= last:
            return


def fetch_rows(dataset: datasets.Dataset | datasets.IterableDataset, indices: Sequence[int]) -> dict[int, dict]:
    """``{index: row}`` for the given row indices (a streaming dataset is read up to the largest)."""
    if isinstance(dataset, datasets.Dataset):
        return {index: dataset[int(index)] for index in indices}
    if not indices:
        return {}
    wanted = set(indices)
    return {index: row for index, row in enumerate(dataset.take(max(indices) + 1)) if index in wanted}


def rows_digest(rows: dict[str, list], columns: Sequence[str]) -> str:
    """SHA-256 of what an audit reads of a batch: the cells of ``columns`` (image, labels, masks) of every row.

    An image cell given only as a path (a streamed image folder) is hashed by the file's bytes, so new images
    under old file names change the digest. A resumed audit compares the digests of its batch files with the
    data's, so it never mixes rows of two versions of a dataset.
    """
    hasher = hashlib.sha256()
    for column in columns:
        _feed(hasher, column)
        _feed(hasher, rows[column])
    return hasher.hexdigest()


def _feed(hasher: Any, value: Any) -> None:
    """Hash ``value`` unambiguously: a type tag, a length where needed, then the content."""

    def tagged(tag: bytes, data: bytes) -> None:
        hasher.update(tag + len(data).to_bytes(8, "little") + data)

    if value is None:
        tagged(b"N", b"")
    elif isinstance(value, (bool, np.bool_)):
        tagged(b"B", b"1" if value else b"0")
    elif isinstance(value, (int, np.integer)):
        tagged(b"I", str(int(value)).encode())
    elif isinstance(value, (float, np.floating)):
        tagged(b"F", repr(float(value)).encode())
    elif isinstance(value, str):
        tagged(b"S", value.encode())
    elif isinstance(value, bytes):
        tagged(b"Y", value)
    elif isinstance(value, dict) and value.keys() == {"bytes", "path"} and value["bytes"] is None and value["path"]:
        path = Path(value["path"])
        tagged(b"P", path.read_bytes() if path.is_file() else os.fsencode(path))
    elif isinstance(value, dict):
        tagged(b"D", str(len(value)).encode())
        for key in sorted(value, key=str):
            _feed(hasher, str(key))
            _feed(hasher, value[key])
    elif isinstance(value, list) and (array := _numeric(value)) is not None:  # a mask or label column: one array
        tagged(b"l", f"{array.dtype.str}{array.shape}".encode())
        tagged(b"a", np.ascontiguousarray(array).tobytes())
    elif isinstance(value, (list, tuple)):
        tagged(b"L", str(len(value)).encode())
        for item in value:
            _feed(hasher, item)
    elif isinstance(value, np.ndarray):
        tagged(b"A", f"{value.dtype.str}{value.shape}".encode())
        tagged(b"a", np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Image.Image):
        tagged(b"M", f"{value.mode}{value.size}".encode())
        tagged(b"m", value.tobytes())
    else:
        raise AuditError(
            f"cannot fingerprint a dataset cell of type {type(value).__name__} (needed to resume safely); "
            "give the column as images, numbers, strings or arrays"
        )


def _numeric(cells: list) -> np.ndarray | None:
    """``cells`` (nested lists of numbers, e.g. an ``Array2D`` column) as one numeric array, else ``None``."""
    try:
        array = np.asarray(cells)
    except ValueError:  # ragged
        return None
    return array if array.dtype.kind in "biuf" else None
