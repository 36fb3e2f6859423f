"""The audit driver: resumable, multi-process (Accelerate) runs of :class:`~hf_iia.tools.audit.auditor.Auditor`
over the batches of a dataset, then the outputs (see :mod:`hf_iia.tools.audit`)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import pyarrow.parquet as pq
import torch

from ...errors import AuditError
from ...outputs import check_output_folder, output_path, write_atomic
from .auditor import Auditor
from .config import AuditConfig
from .data import iter_batches, load_audit_dataset, resolve_columns, rows_digest
from .files import (
    batch_path,
    check_batches,
    gather,
    prepare_folder,
    record_stream_end,
    row_count,
    write_batch,
    write_results,
)
from .grid import GRID_FILE, overlay_grid
from .summary import summarise

if TYPE_CHECKING:
    from accelerate import PartialState


def _process_state(device: str | None) -> PartialState:
    """Accelerate's state of this process; CPU processes (no accelerator, or ``device="cpu"``) join with gloo."""
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.accelerator.is_available())


def run_audit(
    config: AuditConfig, out: str | os.PathLike, *, overwrite: bool = False, progress: bool = True
) -> dict[str, Any] | None:
    """Run (or resume) an audit into ``out``; see the module doc.

    A resume checks that the checkpoint and the rows already audited are unchanged (else :class:`AuditError`).
    ``overwrite``: discard the audit (or the committed card of another audit) in ``out`` and start afresh.
    Under ``accelerate launch`` every process calls this with the same arguments.

    Returns:
        The summary (as written to ``summary.json``) on the main process, ``None`` on the others.
    """
    from tqdm.auto import tqdm

    from .cards import audit_card

    state = _process_state(config.device)
    out = Path(out).resolve()
    if state.is_main_process:
        check_output_folder(out)  # an unwritable folder fails before the model loads
    dataset = load_audit_dataset(config)
    label_column, mask_column = resolve_columns(config, dataset.column_names or _first_columns(dataset))
    columns = [name for name in (config.image_column, label_column, mask_column) if name is not None]
    feature = (dataset.features or {}).get(label_column) if label_column else None
    auditor = Auditor(config, config.device or state.device, _candidate_labels(config, feature, label_column))
    if isinstance(feature, datasets.ClassLabel) and label_column:
        auditor.read_class_label(feature.names, label_column)
    image_feature = (dataset.features or {}).get(config.image_column)
    auditor.image_mode = image_feature.mode if isinstance(image_feature, datasets.Image) else None
    if state.is_main_process:
        prepare_folder(out, config, overwrite=overwrite)
    state.wait_for_everyone()
    rows = row_count(out, dataset, config.n)
    check_batches(out, dataset, config.batch_size, columns, rows)  # every process: none waits on a refused one
    pending = [k for k in range(math.ceil(rows / config.batch_size)) if not batch_path(out, k).exists()]
    state.wait_for_everyone()  # every process has listed the same pending batches before anyone writes
    with state.split_between_processes(pending) as mine:
        bar = tqdm(
            total=len(mine),
            desc=f"audit [process {state.process_index + 1}/{state.num_processes}]",
            unit="batch",
            disable=not (progress and state.is_local_main_process),
        )
        last = -1
        for k, batch in iter_batches(dataset, config.batch_size, mine):
            table = auditor.audit_batch(k * config.batch_size, batch, label_column, mask_column)
            write_batch(out, k, table, rows_digest(batch, columns))
            last = k
            bar.update()
        bar.close()
        if mine and last < max(mine):  # only a stream shorter than n ends early
            record_stream_end(out, dataset, config.image_column)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    rows = row_count(out, dataset, config.n)
    frame = gather(out, rows, config.batch_size)
    input_size = tuple(pq.read_schema(batch_path(out, 0)).field("heatmap").type.shape)
    summary = summarise(frame, config, auditor.methods, _class_names(dataset, label_column, auditor), input_size)
    write_results(out, rows, config.batch_size, summary, frame)
    grid = overlay_grid(frame, dataset, out, config, auditor, summary)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    write_atomic(output_path(out, GRID_FILE, overwrite=True), buffer.getvalue())
    write_atomic(output_path(out, "README.md", overwrite=True), str(audit_card(summary, GRID_FILE)).encode())
    return summary


def _candidate_labels(config: AuditConfig, feature: object, label_column: str | None) -> list[str] | None:
    """The label column's ``ClassLabel`` names as a zero-shot model's candidate labels, with
    ``config.labels_from_dataset``; else ``None``.

    Raises:
        AuditError: ``labels_from_dataset`` without a ``ClassLabel`` label column, or a ``hypothesis_template``
            without ``labels_from_dataset``.
    """
    if not config.labels_from_dataset:
        if config.hypothesis_template is not None:
            raise AuditError(
                "hypothesis_template (--hypothesis-template) is the prompt of a zero-shot model's candidate labels; "
                "give it with labels_from_dataset=True (--labels-from-dataset), or leave it out"
            )
        return None
    if not isinstance(feature, datasets.ClassLabel):
        found = f"column {label_column!r} is {type(feature).__name__}" if label_column else "there is no label column"
        raise AuditError(
            f"labels_from_dataset (--labels-from-dataset) reads the class names of a datasets.ClassLabel label column, "
            f"but {found}; cast the column to ClassLabel(names=[...]) (dataset.cast_column), or name it with "
            "label_column= (--labels)"
        )
    return list(feature.names)


def _first_columns(dataset: datasets.IterableDataset) -> list[str]:
    """Column names of a stream whose features are unknown, from its first row."""
    for row in dataset.take(1):
        return list(row)
    raise AuditError("the dataset has no rows")


def _class_names(
    dataset: datasets.Dataset | datasets.IterableDataset, label_column: str | None, auditor: Auditor
) -> dict[int, str]:
    """Class index -> name: the dataset's ``ClassLabel`` names when its values are taken as they are, else the
    model's ``id2label``."""
    feature = (dataset.features or {}).get(label_column) if label_column else None
    if isinstance(feature, datasets.ClassLabel) and auditor.class_label is None:
        return dict(enumerate(feature.names))
    return auditor.explainers["iia"].id2label
