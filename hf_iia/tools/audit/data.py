"""The audited rows: the dataset (synthetic, saved, image folder or Hub), its columns and its batches."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets

from ...data import DatasetColumnError, check_columns
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
            loaded = datasets.load_from_disk(os.fspath(source))
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
    if dataset.features is not None and isinstance(dataset.features.get(config.image_column), datasets.Image):
        dataset = dataset.cast_column(config.image_column, datasets.Image(decode=False))
    return dataset


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
