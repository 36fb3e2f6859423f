"""Attribution audits: faithfulness, localisation and spurious-cue indicators of a classifier on a dataset.

:func:`run_audit` explains ``n`` rows of a dataset with IIA and one comparison method and
measures, per row and method:

* faithfulness: deletion and insertion AUC (:mod:`hf_iia.metrics`, ``perturbation_steps``
  steps; lower deletion / higher insertion is better),
* localisation, when the dataset has object masks: mask average precision, pointing game
  and the share of the map's mass on the object (energy pointing game),
* spurious-cue indicators: the share of the map's mass (the sum of its ``[0, 1]`` values)
  in the border band and in the most-attributed corner square, and off the object.

Verdict (per class and method, from the class means; all shares are of map mass):

=========== ================================================================================
flag        raised when (constants in :class:`Thresholds`)
=========== ================================================================================
corner      one corner square (side ``corner_fraction`` = 1/8 of the image side, 1.6% of the
            image) holds at least ``corner_lift`` = 3x its area share of the mass (4.7%)
border      the border band (``border_fraction`` = 1/8 of the side wide, 44% of the image)
            holds at least ``border_lift`` = 1.6x its area share (70%)
off-object  with masks: the object holds at most ``object_lift`` = 1x its area share of the
            mass, i.e. the maps point at the object no better than a uniform map would
=========== ================================================================================

A uniform map gives every lift 1; a flag says the class's maps concentrate off-object.
Calibration (synthetic shapes, 64 px, 120 images): a ResNet trained with the corner patch
puts 10-13% of its stage-3 maps' mass in that corner (lift 7-8) and 40-75% of its object
share; the same ResNet trained on clean images at most 1.8% (lift 1.15) and 150-230%. Maps
coarser than the corner square blur a corner cue into its quadrant: from the same model's
last stage (2x2) the patch shows as 3.7-4.9% (lift 2.4-3.1), so audit such models at an
earlier ``layer``.
The spread of every indicator across classes (standard deviation and range of the class
means) is reported too: a cue used for some classes only shows up as a large spread.

Resumable and multi-process. The rows are cut into batches of ``batch_size``; batch ``k``
is written to ``OUT/raw/batches/batch-<k>.parquet`` through a temporary file and an atomic
rename, so a batch file exists only complete. A run first lists the missing batches, then
(after a barrier) every process takes its share of them (Accelerate's
``split_between_processes``) and writes their files; the main process then reads all
batch files in order and writes the outputs. Killed at any moment and started again with
the same command, an audit redoes only the batches whose files are missing: no row is
lost or written twice. ``OUT/raw/manifest.json`` holds the settings; a different command
on the same folder is refused. Under ``accelerate launch`` the processes must share
``OUT`` (one machine, or a shared file system).

Outputs in ``OUT``: ``README.md`` (the model-card section, :mod:`hf_iia.tools.audit.cards`),
``audit_grid.png`` (overlays), ``results.json`` (settings, tables, verdicts, per-row
metrics) and ``results.parquet`` (one row per image and method, maps included as float16
``[H, W]`` tensors). Nothing is written elsewhere, except the Hugging Face download cache
when the model or dataset is a Hub id.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from ...data import DatasetColumnError, check_columns, decode_image
from ...errors import AuditError
from ...explainer import Explanation, IIAExplainer
from ...imaging import Geometry
from ...methods import METHODS
from ...metrics import deletion_auc, energy_pointing_game, insertion_auc, mask_average_precision, pointing_game
from ...outputs import OutputPathError, output_path, write_atomic

if TYPE_CHECKING:
    import pandas
    from accelerate import PartialState

SYNTHETIC_DATASETS: dict[str, bool] = {"synthetic": False, "synthetic-shortcut": True}
"""Built-in dataset names -> whether the class-coloured corner patch is planted (:mod:`hf_iia.tools.synthetic`)."""

"""First synthetic sample index audited: the held-out range of ``scripts/train_synthetic.py``."""

"""The comparison method used when none is named, per model family."""

CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
GRID_CLASSES = 8
GRID_EXAMPLES = 2
GRID_FILE = "audit_grid.png"
GRID_TILE = 160


@dataclass(frozen=True)
class Thresholds:
    """Region sizes and the lifts (mass share / area share) above which a class is flagged; see the module doc."""

    corner_fraction: float = 0.125
    border_fraction: float = 0.125
    corner_lift: float = 3.0
    border_lift: float = 1.6
    object_lift: float = 1.0


@dataclass(frozen=True)
class AuditConfig:
    """What to audit; saved in the manifest, so a resumed run must repeat it exactly.

    Attributes:
        model: Hub id or local checkpoint folder.
        dataset: ``"synthetic"`` / ``"synthetic-shortcut"``, a folder saved with
            ``save_to_disk``, an image folder (``imagefolder``) or a Hub dataset id.
        split: the split to read (default: ``test``, else ``validation``, else ``train``).
        n: how many rows (the first ``n``).
        batch_size: rows per batch (and per resumable unit).
        image_column: the column holding the images.
        label_column: ground-truth classes, explained and used to group rows (default:
            ``"label"`` if present; without labels the top-1 class is explained).
        mask_column: object masks (default: ``"mask"`` for the synthetic datasets).
        compare: the comparison method (default: the model family's ``Family.comparison``).
        layer: the layer IIA explains (dotted module name), also given to a comparison
            method that explains one layer (Grad-CAM); default: the adapter's.
        preset: IIA's preset. steps: IIA's steps.
        perturbation_steps: steps of the deletion and insertion curves.
        internal_batch_size: integration points per forward pass.
        image_size: side of the synthetic images. seed: the synthetic data seed.
        device: where the model runs (default: the process's Accelerate device).
    """

    model: str
    dataset: str
    split: str | None = None
    n: int = 240
    batch_size: int = 16
    image_column: str = "image"
    label_column: str | None = None
    mask_column: str | None = None
    compare: str | None = None
    layer: str | None = None
    preset: str | None = None
    steps: int | tuple[int, ...] | None = None
    perturbation_steps: int = 20
    internal_batch_size: int | None = None
    image_size: int = 64
    seed: int = 0
    device: str | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)

    def manifest(self) -> dict[str, Any]:
        """The JSON form stored in ``raw/manifest.json`` (device left out: it may differ between runs)."""
        settings = asdict(self)
        settings.pop("device")
        return json.loads(json.dumps(settings))


# ------------------------------------------------------------------------------- data
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
            config.n, seed=config.seed, size=config.image_size, shortcut=SYNTHETIC_DATASETS[config.dataset],
            start=HELDOUT_START,
        )
    else:
        source = Path(config.dataset)
        if source.is_dir() and any((source / name).exists() for name in ("state.json", "dataset_dict.json")):
            loaded = datasets.load_from_disk(os.fspath(source))
        elif source.is_dir():
            loaded = datasets.load_dataset("imagefolder", data_dir=os.fspath(source), streaming=True)
        else:
            loaded = datasets.load_dataset(config.dataset, streaming=True)
        dataset = _pick_split(loaded, config.split)
        dataset = dataset.take(config.n) if isinstance(dataset, datasets.IterableDataset) else (
            dataset.select(range(min(config.n, len(dataset))))
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


# ------------------------------------------------------------------------ indicators
def region_masks(height: int, width: int, thresholds: Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """``(border [H, W] bool, corners [4, H, W] bool)`` in :data:`CORNERS` order."""
    def pixels(fraction: float, length: int) -> int:
        return max(1, round(fraction * length))

    band_y, band_x = pixels(thresholds.border_fraction, height), pixels(thresholds.border_fraction, width)
    border = np.ones((height, width), dtype=bool)
    border[band_y : height - band_y, band_x : width - band_x] = False
    side_y, side_x = pixels(thresholds.corner_fraction, height), pixels(thresholds.corner_fraction, width)
    corners = np.zeros((4, height, width), dtype=bool)
    corners[0, :side_y, :side_x] = corners[1, :side_y, -side_x:] = True
    corners[2, -side_y:, :side_x] = corners[3, -side_y:, -side_x:] = True
    return border, corners


def region_shares(maps: np.ndarray, thresholds: Thresholds) -> dict[str, np.ndarray]:
    """Share of each map's mass in the border band and in each corner square.

    Args:
        maps: ``[B, H, W]`` non-negative maps.

    Returns:
        ``{"border_mass": [B], "top_left_mass": [B], ...}`` (one entry per corner of
        :data:`CORNERS`); an all-zero map has shares 0.
    """
    border, corners = region_masks(*maps.shape[1:], thresholds)
    maps = maps.astype(np.float64)
    total = maps.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    shares = {"border_mass": (maps * border).sum(axis=(1, 2)) / safe}
    per_corner = np.einsum("bhw,chw->cb", maps, corners.astype(np.float64)) / safe
    shares.update({_corner_column(name): share for name, share in zip(CORNERS, per_corner)})
    return shares


def _corner_column(corner: str) -> str:
    return corner.replace("-", "_") + "_mass"


def mask_to_input(mask: np.ndarray, geometry: Geometry | None, size: tuple[int, int]) -> np.ndarray:
    """Carry an object mask ``[H0, W0]`` from the original image onto the model input ``size = (H, W)``.

    Each model-input pixel takes the mask value at its source position (nearest pixel);
    pixels that show no part of the image (padding) are off the object. Without a known
    geometry the mask is resized like the image (nearest neighbour).
    """
    height, width = size
    if geometry is None:
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(resized) > 0
    u = np.rint(geometry.scale_x * np.arange(width) + geometry.shift_x).astype(np.int64)
    v = np.rint(geometry.scale_y * np.arange(height) + geometry.shift_y).astype(np.int64)
    inside = ((v >= 0) & (v < mask.shape[0]))[:, None] & ((u >= 0) & (u < mask.shape[1]))[None, :]
    return mask[v.clip(0, mask.shape[0] - 1)][:, u.clip(0, mask.shape[1] - 1)] & inside


def _as_mask(cell: Any, image: Image.Image, row: int) -> np.ndarray:
    """A mask cell (array, nested list or PIL image; non-zero = object) -> ``[H0, W0]`` bool matching ``image``."""
    if cell is None:
        raise DatasetColumnError(f"row {row}: the mask is missing (None)")
    mask = np.asarray(cell)
    mask = mask.any(axis=-1) if mask.ndim == 3 else mask != 0
    if mask.shape != (image.height, image.width):
        raise DatasetColumnError(
            f"row {row}: the mask has shape {mask.shape} but the image is {(image.height, image.width)}; "
            "masks must be pixel-aligned with their images"
        )
    return mask


# --------------------------------------------------------------------------- auditor
class Auditor:
    """The model, its explainers and the per-batch measurements of one audit (one per process).

    Args:
        config: the audit settings.
        device: where the model runs.
    """

    def __init__(self, config: AuditConfig, device: torch.device | str) -> None:
        from ...loading import load_model, load_processor

        self.config = config
        self.model = load_model(config.model).to(device).eval()
        processor = load_processor(config.model)
        options = {"internal_batch_size": config.internal_batch_size, "progress": False}
        iia = IIAExplainer(
            self.model, processor, layer=config.layer, preset=config.preset, steps=config.steps, **options
        )
        compare = config.compare or iia.family.comparison
        if compare in METHODS and "layer" in METHODS[compare].options:
            options["layer"] = config.layer
        self.explainers: dict[str, IIAExplainer] = {
            "iia": iia,
            compare: IIAExplainer(self.model, processor, method=compare, **options),
        }

    @property
    def methods(self) -> tuple[str, ...]:
        """The audited methods, IIA first."""
        return tuple(self.explainers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, K]`` of ``pixel_values`` ``[N, C, H, W]`` without gradients."""
        with torch.no_grad():
            return self.model(pixel_values=pixel_values).logits

    def audit_batch(
        self, first: int, rows: dict[str, list], label_column: str | None, mask_column: str | None
    ) -> pa.Table:
        """Measure one batch of ``B`` rows, rows ``first, first + 1, ...`` of the dataset.

        Returns:
            ``2 B`` rows, one per (image, method), with the columns of :data:`COLUMN_TYPES`
            (the mask ones only with masks) and ``heatmap``, a float16 ``[H, W]`` tensor column.
        """
        indices = list(range(first, first + len(rows[self.config.image_column])))
        images = [decode_image(cell, index) for cell, index in zip(rows[self.config.image_column], indices)]
        reference = self.explainers["iia"]
        pixel_values = reference.preprocess(images)[0].to(next(self.model.parameters()).device)
        probabilities = self.forward(pixel_values).float().softmax(dim=1)
        prediction_score, prediction = probabilities.max(dim=1)
        labels = [int(label) for label in rows[label_column]] if label_column else None
        targets = labels if labels is not None else prediction.tolist()
        image_columns: dict[str, Any] = {
            "index": indices,
            "label": labels if labels is not None else [None] * len(indices),
            "prediction": prediction.tolist(),
            "prediction_score": prediction_score.tolist(),
            "target": targets,
        }
        masks = None
        if mask_column:
            size = tuple(pixel_values.shape[-2:])
            masks = np.stack([
                mask_to_input(_as_mask(cell, image, index), reference.geometry(image.size), size)
                for cell, image, index in zip(rows[mask_column], images, indices)
            ])
        tables = [
            self._method_table(method, explainer, pixel_values, targets, masks, image_columns)
            for method, explainer in self.explainers.items()
        ]
        return pa.concat_tables(tables)

    def _method_table(
        self,
        method: str,
        explainer: IIAExplainer,
        pixel_values: torch.Tensor,
        targets: list[int],
        masks: np.ndarray | None,
        image_columns: dict[str, Any],
    ) -> pa.Table:
        """The rows of one method for one batch (``pixel_values`` ``[B, C, H, W]``, ``masks`` ``[B, H, W]``)."""
        explanations = explainer(pixel_values, target=targets)
        maps = np.stack([explanation.heatmap for explanation in explanations])  # [B, H, W]
        steps = self.config.perturbation_steps
        shares = region_shares(maps, self.config.thresholds)
        columns: dict[str, Any] = {
            **image_columns,
            "method": [method] * len(targets),
            "score": [explanation.score for explanation in explanations],
            "deletion_auc": deletion_auc(self.forward, pixel_values, maps, targets, steps=steps).tolist(),
            "insertion_auc": insertion_auc(self.forward, pixel_values, maps, targets, steps=steps).tolist(),
            **{name: share.tolist() for name, share in shares.items()},
            **(_mask_metrics(maps, masks) if masks is not None else {}),
        }
        arrays = {name: pa.array(values, type=COLUMN_TYPES[name]) for name, values in columns.items()}
        arrays["heatmap"] = pa.FixedShapeTensorArray.from_numpy_ndarray(maps.astype(np.float16))
        return pa.table({name: arrays[name] for name in [*COLUMN_TYPES, "heatmap"] if name in arrays})


COLUMN_TYPES: dict[str, pa.DataType] = {
    "index": pa.int64(),
    "method": pa.string(),
    "label": pa.int64(),
    "prediction": pa.int64(),
    "prediction_score": pa.float64(),
    "target": pa.int64(),
    "score": pa.float64(),
    "deletion_auc": pa.float64(),
    "insertion_auc": pa.float64(),
    "border_mass": pa.float64(),
    **{_corner_column(corner): pa.float64() for corner in CORNERS},
    "mask_area": pa.float64(),
    "object_mass": pa.float64(),
    "mask_ap": pa.float64(),
    "pointing_game": pa.bool_(),
}
"""The per-row result columns in file order (``heatmap``, a float16 ``[H, W]`` tensor, comes last)."""


def _mask_metrics(maps: np.ndarray, masks: np.ndarray) -> dict[str, list]:
    """``mask_area, object_mass, mask_ap, pointing_game`` of ``maps`` ``[B, H, W]`` against ``masks`` ``[B, H, W]``.

    Rows whose mask has no object pixel on the model input get ``None`` (the metrics are undefined).
    """
    valid = masks.any(axis=(1, 2))
    out: dict[str, list] = {"mask_area": masks.mean(axis=(1, 2)).tolist()}
    values = {"object_mass": energy_pointing_game, "mask_ap": mask_average_precision, "pointing_game": pointing_game}
    for name, metric in values.items():
        column: list = [None] * len(maps)
        if valid.any():
            for index, value in zip(np.flatnonzero(valid), metric(maps[valid], masks[valid]).tolist()):
                column[index] = value
        out[name] = column
    return out


# ----------------------------------------------------------------------------- files
def _batch_path(out: Path, k: int) -> Path:
    return out / "raw" / "batches" / f"batch-{k:06d}.parquet"


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, allow_nan=False).encode()


def _prepare_folder(out: Path, config: AuditConfig) -> None:
    """Create ``out`` (or check that it holds this audit), write the manifest, remove stale temporary files."""
    manifest = out / "raw" / "manifest.json"
    wanted = {"hf_iia_audit": 1, "config": config.manifest()}
    if manifest.exists():
        found = json.loads(manifest.read_text())
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
    _batch_path(out, 0).parent.mkdir(exist_ok=True)
    for stale in out.rglob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _row_count(out: Path, dataset: datasets.Dataset | datasets.IterableDataset, n: int) -> int:
    """Rows in the audit: the dataset's length, or for a stream the recorded end (else ``n``)."""
    if isinstance(dataset, datasets.Dataset):
        return len(dataset)
    end = out / "raw" / "end.json"
    return json.loads(end.read_text())["rows"] if end.exists() else n


def _record_stream_end(out: Path, dataset: datasets.IterableDataset, image_column: str) -> None:
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
    paths = [_batch_path(Path(out), k) for k in range(math.ceil(rows / batch_size))]
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
        table = pq.read_table(_batch_path(Path(out), k), columns=["index", "method", "heatmap"])
        stack = table["heatmap"].combine_chunks().to_numpy_ndarray()  # [R, H, W] float16
        for row, (index, method) in enumerate(zip(table["index"].to_pylist(), table["method"].to_pylist())):
            if (index, method) in keys:
                maps[(index, method)] = stack[row].astype(np.float32)
    return maps


def _write_results(out: Path, rows: int, batch_size: int, summary: dict[str, Any], frame: pandas.DataFrame) -> None:
    """``results.json`` (summary + per-row measures) and ``results.parquet`` (all batch files, maps included)."""
    records = json.loads(frame.to_json(orient="records"))
    write_atomic(output_path(out, "results.json", overwrite=True), _json_bytes({**summary, "results": records}))
    target = output_path(out, "results.parquet", overwrite=True)
    temporary = target.with_name(f".{target.name}.partial.tmp")
    paths = [_batch_path(out, k) for k in range(math.ceil(rows / batch_size))]
    with pq.ParquetWriter(temporary, pq.read_schema(paths[0])) as writer:
        for path in paths:
            writer.write_table(pq.read_table(path))
    os.replace(temporary, target)


# ---------------------------------------------------------------------------- driver
def _process_state(device: str | None) -> PartialState:
    """Accelerate's state of this process; CPU processes (no accelerator, or ``device="cpu"``) join with gloo."""
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.accelerator.is_available())


def run_audit(config: AuditConfig, out: str | os.PathLike, *, progress: bool = True) -> dict[str, Any] | None:
    """Run (or resume) an audit into ``out``; see the module doc.

    Under ``accelerate launch`` every process calls this with the same arguments.

    Returns:
        The summary (as written to ``results.json``) on the main process, ``None`` on the others.
    """
    from tqdm.auto import tqdm

    from .cards import audit_card

    state = _process_state(config.device)
    out = Path(out).resolve()
    dataset = load_audit_dataset(config)
    label_column, mask_column = resolve_columns(config, dataset.column_names or _first_columns(dataset))
    auditor = Auditor(config, config.device or state.device)
    if state.is_main_process:
        _prepare_folder(out, config)
    state.wait_for_everyone()
    rows = _row_count(out, dataset, config.n)
    pending = [k for k in range(math.ceil(rows / config.batch_size)) if not _batch_path(out, k).exists()]
    state.wait_for_everyone()  # every process has listed the same pending batches before anyone writes
    with state.split_between_processes(pending) as mine:
        bar = tqdm(total=len(mine), desc=f"audit [process {state.process_index + 1}/{state.num_processes}]",
                   unit="batch", disable=not (progress and state.is_local_main_process))
        last = -1
        for k, batch in iter_batches(dataset, config.batch_size, mine):
            table = auditor.audit_batch(k * config.batch_size, batch, label_column, mask_column)
            write_atomic(_batch_path(out, k), _parquet_bytes(table))
            last = k
            bar.update()
        bar.close()
        if mine and last < max(mine):  # only a stream shorter than n ends early
            _record_stream_end(out, dataset, config.image_column)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    rows = _row_count(out, dataset, config.n)
    frame = gather(out, rows, config.batch_size)
    input_size = tuple(pq.read_schema(_batch_path(out, 0)).field("heatmap").type.shape)
    summary = summarise(frame, config, auditor.methods, _class_names(dataset, label_column, auditor), input_size)
    _write_results(out, rows, config.batch_size, summary, frame)
    grid = overlay_grid(frame, dataset, out, config, auditor, summary)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    write_atomic(output_path(out, GRID_FILE, overwrite=True), buffer.getvalue())
    write_atomic(output_path(out, "README.md", overwrite=True), str(audit_card(summary, GRID_FILE)).encode())
    return summary


def _first_columns(dataset: datasets.IterableDataset) -> list[str]:
    """Column names of a stream whose features are unknown, from its first row."""
    for row in dataset.take(1):
        return list(row)
    raise AuditError("the dataset has no rows")


def _class_names(
    dataset: datasets.Dataset | datasets.IterableDataset, label_column: str | None, auditor: Auditor
) -> dict[int, str]:
    """Class index -> name: the dataset's ``ClassLabel`` names, else the model's ``id2label``."""
    feature = (dataset.features or {}).get(label_column) if label_column else None
    if isinstance(feature, datasets.ClassLabel):
        return dict(enumerate(feature.names))
    return auditor.explainers["iia"].id2label


# --------------------------------------------------------------------------- summary
MEASURES: tuple[str, ...] = (
    "score", "deletion_auc", "insertion_auc", "border_mass", *(_corner_column(corner) for corner in CORNERS),
    "mask_area", "object_mass", "mask_ap", "pointing_game",
)
"""Per-row measures averaged per class and overall (the mask ones only with masks)."""


def summarise(
    frame: pandas.DataFrame,
    config: AuditConfig,
    methods: Sequence[str],
    class_names: dict[int, str],
    input_size: tuple[int, int],
) -> dict[str, Any]:
    """Tables and verdicts from the per-row results (see :func:`gather`) of maps of ``input_size = (H, W)``."""
    thresholds = config.thresholds
    height, width = input_size
    border, corners = region_masks(height, width, thresholds)
    areas = {"border": float(border.mean()), "corner": float(corners[0].mean())}
    has_labels = frame["label"].notna().all()
    frame = frame.assign(
        group=frame["label"] if has_labels else frame["target"], correct=frame["prediction"] == frame["label"]
    )
    measures = [name for name in MEASURES if name in frame and frame[name].notna().any()]
    summary: dict[str, Any] = {
        "model": config.model,
        "dataset": config.dataset,
        "split": config.split,
        "rows": int(frame["index"].nunique()),
        "methods": list(methods),
        "has_labels": bool(has_labels),
        "has_masks": "object_mass" in measures,
        "grouped_by": "label" if has_labels else "target (top-1 class)",
        "input_size": [int(height), int(width)],
        "settings": config.manifest(),
        "areas": areas,
        "overall": {},
        "classes": {},
        "spread": {},
        "verdict": {},
    }
    for method, rows in frame.groupby("method", sort=False):
        summary["overall"][method] = _means(rows, measures, has_labels)
        classes = []
        for group, members in rows.groupby("group"):
            name = class_names.get(int(group), str(group))
            entry = {"class": int(group), "name": name, **_means(members, measures, has_labels)}
            entry["flags"] = _flags(entry, areas, thresholds)
            classes.append(entry)
        summary["classes"][method] = classes
        summary["spread"][method] = {
            name: {"std": _number(np.std([entry[name] for entry in classes])),
                   "range": _number(np.ptp([entry[name] for entry in classes]))}
            for name in ("border_mass", "corner_mass", "object_mass") if classes[0].get(name) is not None
        }
        summary["verdict"][method] = _verdict(classes)
    return summary


def _means(rows: pandas.DataFrame, measures: Sequence[str], has_labels: bool) -> dict[str, Any]:
    """``n``, ``accuracy`` (with labels), the mean of every measure over ``rows``, and the corner
    whose mean share is largest (``corner``) with that share (``corner_mass``)."""
    means: dict[str, Any] = {"n": int(len(rows))}
    if has_labels:
        means["accuracy"] = _number(rows["correct"].mean())
    for name in measures:
        means[name] = _number(rows[name].astype(float).mean())
    means["corner"] = max(CORNERS, key=lambda corner: means[_corner_column(corner)])
    means["corner_mass"] = means[_corner_column(means["corner"])]
    return means


def _number(value: float) -> float | None:
    """A JSON-safe float (``None`` for NaN)."""
    return None if value is None or not np.isfinite(value) else float(value)


def _flags(entry: dict[str, Any], areas: dict[str, float], thresholds: Thresholds) -> list[str]:
    """The plain-language reasons a class's mean shares count as off-object (empty: not flagged)."""
    flags = []
    if entry["corner_mass"] >= thresholds.corner_lift * areas["corner"]:
        flags.append(
            f"corner: {entry['corner_mass']:.0%} of the map mass in the {entry['corner']} corner "
            f"({areas['corner']:.1%} of the image)"
        )
    if entry["border_mass"] >= thresholds.border_lift * areas["border"]:
        flags.append(
            f"border: {entry['border_mass']:.0%} of the map mass on the border ({areas['border']:.0%} of the image)"
        )
    if entry.get("object_mass") is not None and entry["object_mass"] <= thresholds.object_lift * entry["mask_area"]:
        flags.append(
            f"off-object: only {entry['object_mass']:.0%} of the map mass on the object "
            f"({entry['mask_area']:.0%} of the image)"
        )
    return flags


def _verdict(classes: list[dict[str, Any]]) -> dict[str, Any]:
    """The flagged classes and one plain sentence."""
    flagged = [{"class": entry["class"], "name": entry["name"], "reasons": entry["flags"]}
               for entry in classes if entry["flags"]]
    if not flagged:
        text = f"No class concentrates its attribution off-object ({len(classes)} classes checked)."
    else:
        names = ", ".join(repr(entry["name"]) for entry in flagged)
        text = (
            f"{len(flagged)} of {len(classes)} classes concentrate their attribution off-object ({names}): "
            "the model likely relies on a spurious cue there."
        )
    return {"flagged": flagged, "text": text}


# ------------------------------------------------------------------------------ grid
def overlay_grid(
    frame: pandas.DataFrame,
    dataset: datasets.Dataset | datasets.IterableDataset,
    out: Path,
    config: AuditConfig,
    auditor: Auditor,
    summary: dict[str, Any],
) -> Image.Image:
    """The image and each method's overlay, for the first :data:`GRID_EXAMPLES` rows of up to
    :data:`GRID_CLASSES` classes (flagged classes first), one class per line."""
    from ...viz import grid

    classes = sorted(summary["classes"]["iia"], key=lambda entry: (not entry["flags"], entry["class"]))[:GRID_CLASSES]
    first = frame[frame["method"] == "iia"]
    groups = first["label"] if summary["has_labels"] else first["target"]
    chosen = [
        (int(index), entry["name"])
        for entry in classes
        for index in first["index"][groups == entry["class"]][:GRID_EXAMPLES]
    ]
    rows = fetch_rows(dataset, [index for index, _ in chosen])
    maps = read_maps(out, config.batch_size, [(index, method) for index, _ in chosen for method in auditor.methods])
    scores = {(int(row.index), row.method): (int(row.target), float(row.score)) for row in frame.itertuples()}
    tiles, captions = [], []
    for index, name in chosen:
        image = decode_image(rows[index][config.image_column], index)
        tiles.append(_enlarged(image, GRID_TILE))
        captions.append(f"#{index} {name}")
        for method in auditor.methods:
            target, score = scores[(index, method)]
            explanation = Explanation(
                heatmap=maps[(index, method)], target=target, label=None, score=score, image=image,
                geometry=auditor.explainers["iia"].geometry(image.size),
            )
            tiles.append(_enlarged(explanation.overlay(), GRID_TILE))
            captions.append(f"{method} p={score:.2f}")
    return grid(tiles, captions, columns=(1 + len(auditor.methods)) * GRID_EXAMPLES, tile=GRID_TILE)


def _enlarged(image: Image.Image, side: int) -> Image.Image:
    """``image`` scaled up (nearest neighbour) so its longer side is about ``side``; larger images as they are."""
    factor = side // max(image.size)
    if factor < 2:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
