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
from .data import iter_batches, rows_digest

if TYPE_CHECKING:
    import pandas

SUMMARY_FILE = "summary.json"
CARD_FILES = frozenset({"README.md", "audit_grid.png", SUMMARY_FILE, "results.json", "results.parquet"})
"""What an audit writes at the top of ``OUT`` (beside ``raw/``); the committed example cards keep the first three."""
BATCHES = "raw/batches"
DIGEST_KEY = b"hf_iia_rows_sha256"
"""The batch files' Parquet metadata key holding :func:`~hf_iia.tools.audit.data.rows_digest` of their rows."""


def batch_name(k: int) -> str:
    """Batch ``k``'s file, relative to ``OUT``."""
    return f"{BATCHES}/batch-{k:06d}.parquet"


def batch_path(out: Path, k: int) -> Path:
    return out / batch_name(k)


def write_batch(out: Path, k: int, table: pa.Table, digest: str) -> None:
    """Write batch ``k`` atomically, its rows' digest in the file's metadata."""
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), DIGEST_KEY: digest.encode()})
    write_atomic(output_path(out, batch_name(k), overwrite=True), parquet_bytes(table))


def stored_digest(out: Path, k: int) -> str | None:
    """The rows' digest batch ``k``'s file was written with (``None``: a file of an older hf-iia)."""
    value = (pq.read_schema(batch_path(out, k)).metadata or {}).get(DIGEST_KEY)
    return value.decode() if value is not None else None


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, allow_nan=False).encode()


def prepare_folder(out: Path, config: AuditConfig, *, overwrite: bool = False) -> None:
    """Create ``out`` (or check that it holds this audit), write the manifest, remove stale temporary files.

    ``out`` may hold nothing, this audit's files (resumed), or the card files of an audit whose ``raw/`` was not
    kept (a committed example card: recognised by its ``summary.json``) with the same settings (regenerated).
    With ``overwrite`` the previous audit's ``raw/`` files are discarded and a card of other settings is replaced;
    a folder holding anything else is refused either way. Every folder written to must lie inside ``out``.
    """
    folders = [output_path(out, name, overwrite=True) for name in ("raw", BATCHES)]  # a symlink leading out: refused
    manifest = output_path(out, "raw/manifest.json", overwrite=True)
    wanted: dict[str, Any] = {
        "hf_iia_audit": 1,
        "config": config.manifest(),
        "checkpoint": checkpoint_fingerprint(config.model),
    }
    again = "pass --overwrite (overwrite=True) to discard it and audit again, or choose another --out"
    if manifest.exists() and overwrite:
        _discard_raw(out)
    elif manifest.exists():
        found = json.loads(manifest.read_text())
        unknown = wanted["checkpoint"] is None
        if found.get("config") == wanted["config"] and (unknown or found.get("checkpoint") != wanted["checkpoint"]):
            raise AuditError(
                f"{out} holds an audit of {config.model} as it was when the audit began; the checkpoint's weights, "
                "config or processor "
                + ("cannot be fingerprinted (no local folder or cached snapshot)" if unknown else "have changed since")
                + f", so resuming could mix two models; {again}"
            )
        if found != wanted:
            changed = _changed(found.get("config", {}), wanted["config"])
            raise AuditError(
                f"{out} holds an audit with other settings ({', '.join(changed) or 'format'} differ); rerun the same "
                f"command to resume it, or {again}"
            )
    elif out.exists() and any(path.name != "raw" for path in out.iterdir()):  # raw/ without manifest: killed early
        card = _card_settings(out)
        if card is None:
            raise OutputPathError(
                f"{out} is not empty and holds no audit (only an audit's own files, or its card files README.md, "
                f"audit_grid.png and {SUMMARY_FILE}, can be replaced); choose a new or empty --out folder"
            )
        if card != wanted["config"] and not overwrite:
            raise AuditError(
                f"{out} holds the card of an audit with other settings ({', '.join(_changed(card, wanted['config']))} "
                f"differ); {again}"
            )
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    if not manifest.exists():
        write_atomic(manifest, _json_bytes(wanted))
    for folder in (out, *folders):  # only the audit's own folders: nothing else is touched
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)


def _changed(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))


def _card_settings(out: Path) -> dict[str, Any] | None:
    """The settings of the audit whose card files ``out`` holds, or ``None`` when it holds anything else.

    A card folder holds only :data:`CARD_FILES` (and maybe an empty or partial ``raw/``), among them a
    ``summary.json`` written by an audit: a JSON object with the summary's keys and a ``settings`` object.
    """
    names = {path.name for path in out.iterdir()} - {"raw"}
    summary_file = out / SUMMARY_FILE
    if not names <= CARD_FILES or not summary_file.is_file() or summary_file.is_symlink():
        return None
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    keys = {"model", "dataset", "methods", "settings", "overall", "classes", "verdict"}
    if not isinstance(summary, dict) or not keys <= summary.keys() or not isinstance(summary["settings"], dict):
        return None
    return summary["settings"]


def _discard_raw(out: Path) -> None:
    """Remove a previous audit's ``raw/`` files (manifest, stream end, batch files), nothing else."""
    for name in ("raw/manifest.json", "raw/end.json"):
        output_path(out, name, overwrite=True).unlink(missing_ok=True)
    for path in output_path(out, BATCHES, overwrite=True).glob("batch-*.parquet"):
        path.unlink()


def check_batches(
    out: Path, dataset: datasets.Dataset | datasets.IterableDataset, batch_size: int, columns: Sequence[str], rows: int
) -> None:
    """Refuse (:class:`AuditError`) to resume over batch files whose rows are not the dataset's rows now.

    Every existing batch file's stored digest must equal :func:`rows_digest` of the same rows read again (no
    image is decoded), and a stream whose recorded end (``raw/end.json``) has moved is refused too.
    """
    done = [k for k in range(math.ceil(rows / batch_size)) if batch_path(out, k).exists()]
    ended = isinstance(dataset, datasets.IterableDataset) and (out / "raw" / "end.json").exists()
    if not done and not ended:
        return
    beyond = math.ceil(rows / batch_size)  # a stream that ended at `rows` must still have no batch there
    fix = "pass --overwrite (overwrite=True) to audit the data as it is now, or choose another --out"
    seen = set()
    for k, batch in iter_batches(dataset, batch_size, [*done, beyond] if ended else done):
        if k == beyond:
            raise AuditError(f"the dataset has more rows than the {rows} audited before (its end moved); {fix}")
        seen.add(k)
        stored = stored_digest(out, k)
        if stored is None:
            raise AuditError(f"{batch_path(out, k)} was written by an older hf-iia without a data fingerprint; {fix}")
        if stored != rows_digest(batch, columns):
            raise AuditError(
                f"the dataset changed since the audit in {out} began: the rows of batch {k} (rows {k * batch_size} "
                f"to {k * batch_size + len(batch[columns[0]]) - 1}) differ from those audited; resuming would mix "
                f"two versions of the data; {fix}"
            )
    if set(done) - seen:
        raise AuditError(f"the dataset has fewer rows than when the audit in {out} began; {fix}")


def row_count(out: Path, dataset: datasets.Dataset | datasets.IterableDataset, n: int) -> int:
    """Rows in the audit: the dataset's length, or for a stream the recorded end (else ``n``)."""
    if isinstance(dataset, datasets.Dataset):
        return len(dataset)
    end = out / "raw" / "end.json"
    return json.loads(end.read_text())["rows"] if end.exists() else n


def record_stream_end(out: Path, dataset: datasets.IterableDataset, image_column: str) -> None:
    """A stream ended before ``n`` rows: count its rows and record them in ``raw/end.json``."""
    rows = sum(1 for _ in dataset.select_columns([image_column]))
    write_atomic(output_path(out, "raw/end.json", overwrite=True), _json_bytes({"rows": rows}))


def gather(out: str | os.PathLike, rows: int, batch_size: int) -> pandas.DataFrame:
    """The results of every batch file of an audit, in batch order, without the maps.

    Returns:
        One row per image and method (the columns of :func:`~.auditor.column_types` present).

    Raises:
        AuditError: a batch file is missing, or the row indices are not exactly
            ``0 .. rows - 1`` once per method.
    """
    if rows < 1:
        raise AuditError("the dataset has no rows; audit a dataset (or --split) that holds images")
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
        for row, (index, method) in enumerate(
            zip(table["index"].to_pylist(), table["method"].to_pylist(), strict=True)
        ):
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
    temporary = output_path(out, f".{target.name}.partial.tmp", overwrite=True)
    paths = [batch_path(out, k) for k in range(math.ceil(rows / batch_size))]
    schema = pq.read_schema(paths[0])  # without batch 0's row digest, which does not describe the whole file
    schema = schema.with_metadata({key: value for key, value in (schema.metadata or {}).items() if key != DIGEST_KEY})
    with pq.ParquetWriter(temporary, schema) as writer:
        for path in paths:
            # By name, in batch 0's order: a batch written by another version may hold its columns in another order.
            writer.write_table(pq.read_table(path).select(schema.names))
    os.replace(temporary, target)
