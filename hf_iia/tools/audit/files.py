"""The audit folder: manifest, atomic per-batch Parquet files, and the gathered outputs
(``summary.json``, ``results.json``, ``results.parquet``)."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import AuditError
from ...loading import checkpoint_fingerprint
from ...outputs import OutputPathError, output_path, write_atomic
from .config import AuditConfig

if TYPE_CHECKING:
    import pandas

SUMMARY_FILE = "summary.json"


def batch_path(out: Path, k: int) -> Path:
    return out / "raw" / "batches" / f"batch-{k:06d}.parquet"


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, allow_nan=False).encode()


def prepare_folder(out: Path, config: AuditConfig) -> None:
    """Create ``out`` (or check that it holds this audit), write the manifest, remove stale temporary files."""
    manifest = out / "raw" / "manifest.json"
    wanted = {"hf_iia_audit": 1, "config": config.manifest(), "checkpoint": checkpoint_fingerprint(config.model)}
    if manifest.exists():
        found = json.loads(manifest.read_text())
        unknown = wanted["checkpoint"] is None
        if found.get("config") == wanted["config"] and (unknown or found.get("checkpoint") != wanted["checkpoint"]):
            raise AuditError(
                f"{out} holds an audit of {config.model} as it was when the audit began; the checkpoint's weights, "
                "config or processor "
                + ("cannot be fingerprinted (no local folder or cached snapshot)" if unknown else "have changed since")
                + ", so resuming could mix two models. Choose another --out (or delete this one) to audit it again"
            )
        if found != wanted:
            before, now = found.get("config", {}), wanted["config"]
            changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
            raise AuditError(
                f"{out} holds an audit with other settings ({', '.join(changed) or 'format'} differ); rerun the same "
                "command to resume it, or choose another --out"
            )
    elif out.exists() and any(path.name != "raw" for path in out.iterdir()):  # raw/ without manifest: killed early
        raise OutputPathError(f"{out} is not empty and holds no audit; choose a new or empty --out folder")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    if not manifest.exists():
        write_atomic(manifest, _json_bytes(wanted))
    batch_path(out, 0).parent.mkdir(exist_ok=True)
    for stale in out.rglob(".*.tmp"):
        stale.unlink(missing_ok=True)


def row_count(out: Path, dataset: datasets.Dataset | datasets.IterableDataset, n: int) -> int:
    """Rows in the audit: the dataset's length, or for a stream the recorded end (else ``n``)."""
    if isinstance(dataset, datasets.Dataset):
        return len(dataset)
    end = out / "raw" / "end.json"
    return json.loads(end.read_text())["rows"] if end.exists() else n


def record_stream_end(out: Path, dataset: datasets.IterableDataset, image_column: str) -> None:
    """A stream ended before ``n`` rows: count its rows and record them in ``raw/end.json``."""
    rows = sum(1 for _ in dataset.select_columns([image_column]))
    write_atomic(out / "raw" / "end.json", _json_bytes({"rows": rows}))


def gather(out: str | os.PathLike, rows: int, batch_size: int) -> pandas.DataFrame:
    """The results of every batch file of an audit, in batch order, without the maps.

    Returns:
        One row per image and method (the columns of :data:`COLUMN_TYPES` present).

    Raises:
        AuditError: a batch file is missing, or the row indices are not exactly
            ``0 .. rows - 1`` once per method.
    """
    paths = [batch_path(Path(out), k) for k in range(math.ceil(rows / batch_size))]
    missing = [path.name for path in paths if not path.exists()]
    if missing:
        raise AuditError(f"{len(missing)} batch file(s) missing ({missing[:3]}); rerun the same command to finish")
    names = [name for name in pq.read_schema(paths[0]).names if name != "heatmap"]
    frame = pa.concat_tables([pq.read_table(path, columns=names) for path in paths]).to_pandas()
    for method, group in frame.groupby("method", sort=False):
        if not np.array_equal(np.sort(group["index"].to_numpy()), np.arange(rows)):
            raise AuditError(f"the batch files of {method!r} do not hold rows 0..{rows - 1} exactly once")
    return frame


def read_maps(
    out: str | os.PathLike, batch_size: int, keys: Sequence[tuple[int, str]]
) -> dict[tuple[int, str], np.ndarray]:
    """``{(index, method): map [H, W] float32}`` for the given rows, read from their batch files."""
    maps: dict[tuple[int, str], np.ndarray] = {}
    for k in sorted({index // batch_size for index, _ in keys}):
        table = pq.read_table(batch_path(Path(out), k), columns=["index", "method", "heatmap"])
        stack = table["heatmap"].combine_chunks().to_numpy_ndarray()  # [R, H, W] float16
        for row, (index, method) in enumerate(zip(table["index"].to_pylist(), table["method"].to_pylist())):
            if (index, method) in keys:
                maps[(index, method)] = stack[row].astype(np.float32)
    return maps


def write_results(out: Path, rows: int, batch_size: int, summary: dict[str, Any], frame: pandas.DataFrame) -> None:
    """``summary.json`` (the summary alone: a few KB, fit to commit beside the card), ``results.json``
    (summary + per-row measures) and ``results.parquet`` (all batch files, maps included)."""
    write_atomic(output_path(out, SUMMARY_FILE, overwrite=True), _json_bytes(summary))
    records = json.loads(frame.to_json(orient="records"))
    write_atomic(output_path(out, "results.json", overwrite=True), _json_bytes({**summary, "results": records}))
    target = output_path(out, "results.parquet", overwrite=True)
    temporary = target.with_name(f".{target.name}.partial.tmp")
    paths = [batch_path(out, k) for k in range(math.ceil(rows / batch_size))]
    with pq.ParquetWriter(temporary, pq.read_schema(paths[0])) as writer:
        for path in paths:
            writer.write_table(pq.read_table(path))
    os.replace(temporary, target)
