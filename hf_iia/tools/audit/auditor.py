"""The per-batch measurements of an audit: maps of IIA and the comparison method, faithfulness,
localisation and the spurious-cue indicators, as one Arrow table per batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ...data import class_label_indices, decode_image
from ...errors import AuditError, DatasetLabelError, IIAError
from ...explainer import IIAExplainer
from ...methods import METHODS
from ...metrics import deletion_auc, energy_pointing_game, insertion_auc, mask_average_precision, pointing_game
from .config import AuditConfig
from .indicators import CORNERS, as_mask, corner_column, mask_to_input, region_shares


class Auditor:
    """The model, its explainers and the per-batch measurements of one audit (one per process).

    Args:
        config: the audit settings.
        device: where the model runs.
    """

    def __init__(self, config: AuditConfig, device: torch.device | str) -> None:
        self.config = config
        options = {"internal_batch_size": config.internal_batch_size, "progress": False}
        iia = IIAExplainer(
            config.model, device=device, layer=config.layer, preset=config.preset, steps=config.steps, **options
        )
        compare = config.compare or iia.family.comparison
        if compare in METHODS and "layer" in METHODS[compare].options:
            options["layer"] = config.layer
        # The comparison shares IIA's model (no second copy); an unknown name fails here with MethodError.
        self.explainers: dict[str, IIAExplainer] = {
            "iia": iia,
            compare: IIAExplainer(iia.model, iia.processor, method=compare, **options),
        }
        parameter = next(iia.model.parameters(), None)
        # Batches go to the model's device once, so the perturbation curves run there too.
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.class_label: list[int] | None = None  # ClassLabel value -> the model's class, when read by name
        self.image_mode: str | None = None  # the image feature's mode (Image(mode="L")): cells decode with it

    def read_class_label(self, names: list[str], column: str) -> bool:
        """Read the label column's ``ClassLabel`` values as the model's classes by name (as
        :func:`hf_iia.explain_dataset` does); returns whether the names matched one-to-one. Names that do not
        match leave the values as class indices: the label-fit check then tells whether they are the model's."""
        try:
            self.class_label = class_label_indices(self.explainers["iia"], names, column)
        except DatasetLabelError:
            self.class_label = None
        return self.class_label is not None

    @property
    def methods(self) -> tuple[str, ...]:
        """The audited methods, IIA first."""
        return tuple(self.explainers)

    def audit_batch(
        self, first: int, rows: dict[str, list], label_column: str | None, mask_column: str | None
    ) -> pa.Table:
        """Measure one batch of ``B`` rows, rows ``first, first + 1, ...`` of the dataset.

        Returns:
            ``2 B`` rows, one per (image, method), with the columns of :data:`COLUMN_TYPES`
            (the mask ones only with masks) and ``heatmap``, a float16 ``[H, W]`` tensor column.
        """
        indices = list(range(first, first + len(rows[self.config.image_column])))
        images = [
            decode_image(cell, index, self.image_mode) for cell, index in zip(rows[self.config.image_column], indices)
        ]
        reference = self.explainers["iia"]
        pixel_values = reference.preprocess(images)[0].to(self.device)
        # The prediction's score as Explanation.score reports it (the pipeline's rule: sigmoid for multi-label heads)
        prediction_score, prediction = reference.class_scores(reference.logits(pixel_values)).max(dim=1)
        labels = [self._label_index(label) for label in rows[label_column]] if label_column else None
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
            masks = np.stack(
                [
                    mask_to_input(as_mask(cell, image, index), reference.geometry(image.size), size)
                    for cell, image, index in zip(rows[mask_column], images, indices)
                ]
            )
        tables = [
            self._method_table(method, explainer, pixel_values, targets, masks, image_columns)
            for method, explainer in self.explainers.items()
        ]
        return pa.concat_tables(tables)

    def _label_index(self, label: object) -> int:
        """A dataset label as the model's class index: an index as it is, a class name through the model's
        ``id2label`` (the explainer's own name matching); anything else is an :class:`AuditError`."""
        if isinstance(label, str):
            try:
                return self.explainers["iia"].resolve_targets(label, 1).item()
            except IIAError as error:
                raise AuditError(f"dataset label {label!r} is not one of the model's class names ({error})") from None
        try:
            index = int(label)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise AuditError(f"dataset label {label!r} is neither a class index nor a class name") from None
        if self.class_label is None:
            return index
        if not 0 <= index < len(self.class_label):
            raise AuditError(f"dataset label {label!r} is not one of the label column's ClassLabel classes")
        return self.class_label[index]

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
        forward = self.explainers["iia"].logits
        shares = region_shares(maps, self.config.thresholds)
        columns: dict[str, Any] = {
            **image_columns,
            "method": [method] * len(targets),
            "score": [explanation.score for explanation in explanations],
            "deletion_auc": deletion_auc(forward, pixel_values, maps, targets, steps=steps).tolist(),
            "insertion_auc": insertion_auc(forward, pixel_values, maps, targets, steps=steps).tolist(),
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
    **{corner_column(corner): pa.float64() for corner in CORNERS},
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
