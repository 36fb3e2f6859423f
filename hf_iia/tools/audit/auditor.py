"""The per-batch measurements of an audit: maps of IIA and the comparison method, faithfulness,
localisation and the spurious-cue indicators, as one Arrow table per batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ...data import class_label_indices, decode_image
from ...errors import AuditError, DatasetLabelError, IIAError, UnsupportedModelError
from ...explainer import IIAExplainer
from ...methods import METHODS
from ...metrics import MetricInputs
from .config import AuditConfig
from .indicators import as_mask, mask_to_input, region_shares
from .measures import audit_metrics, column_name, measures


class Auditor:
    """The model, its explainers and the per-batch measurements of one audit (one per process).

    Args:
        config: the audit settings.
        device: where the model runs.
        candidate_labels: a zero-shot model's candidate labels (the dataset's class names with
            ``config.labels_from_dataset``); ``None`` for an image classifier.

    Raises:
        AuditError: a zero-shot model without candidate labels (the message names ``--labels-from-dataset``).
    """

    def __init__(
        self, config: AuditConfig, device: torch.device | str, candidate_labels: list[str] | None = None
    ) -> None:
        self.config = config
        batch = config.internal_batch_size
        try:
            iia = IIAExplainer(
                config.model,
                device=device,
                layer=config.layer,
                preset=config.preset,
                steps=config.steps,
                internal_batch_size=batch,
                progress=False,
                candidate_labels=candidate_labels,
                hypothesis_template=config.hypothesis_template,
            )
        except UnsupportedModelError as error:
            if candidate_labels is not None or "zero-shot" not in str(error):
                raise
            raise AuditError(
                f"{error}. To audit it, take the dataset's ClassLabel names as its candidate labels: "
                "labels_from_dataset=True (hf-iia audit --labels-from-dataset, optionally --hypothesis-template)"
            ) from None
        compare = config.compare or iia.family.comparison
        if compare is None:
            raise AuditError(
                f"the {iia.family.name} family declares no comparison method; pass compare= (--compare), e.g. 'ig'"
            )
        # A method that explains one layer (Grad-CAM) explains IIA's; the others read no layer= (None = unset).
        layer = config.layer if compare in METHODS and "layer" in METHODS[compare].options else None
        # The comparison shares IIA's model (no second copy); an unknown name fails here with MethodError.
        self.explainers: dict[str, IIAExplainer] = {
            "iia": iia,
            compare: IIAExplainer(
                iia.model, iia.processor, method=compare, layer=layer, internal_batch_size=batch, progress=False
            ),
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
            ``2 B`` rows, one per (image, method), with the columns of :func:`column_types`
            (the mask ones only with masks) and ``heatmap``, a float16 ``[H, W]`` tensor column.
        """
        indices = list(range(first, first + len(rows[self.config.image_column])))
        images = [
            decode_image(cell, index, self.image_mode)
            for cell, index in zip(rows[self.config.image_column], indices, strict=True)
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
            size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
            masks = np.stack(
                [
                    mask_to_input(as_mask(cell, image, index), reference.geometry(image.size), size)
                    for cell, image, index in zip(rows[mask_column], images, indices, strict=True)
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
                return int(self.explainers["iia"].resolve_targets(label, 1).item())
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
        batch = MetricInputs(
            maps=torch.from_numpy(maps),
            targets=torch.as_tensor(targets),
            pixel_values=pixel_values,
            forward=self.explainers["iia"].logits,
            masks=None if masks is None else torch.from_numpy(masks),
            perturbation_steps=self.config.perturbation_steps,
        )
        shares = region_shares(maps, self.config.thresholds)
        columns: dict[str, Any] = {
            **image_columns,
            "method": [method] * len(targets),
            "score": [explanation.score for explanation in explanations],
            **{name: share.tolist() for name, share in shares.items()},
            **_metric_columns(batch),
        }
        types = column_types()
        arrays = {name: pa.array(values, type=types[name]) for name, values in columns.items()}
        arrays["heatmap"] = pa.FixedShapeTensorArray.from_numpy_ndarray(maps.astype(np.float16))
        return pa.table({name: arrays[name] for name in [*types, "heatmap"] if name in arrays})


def column_types() -> dict[str, pa.DataType]:
    """The per-row result columns in file order (``heatmap``, a float16 ``[H, W]`` tensor, comes last): the row's
    facts, then :func:`~.measures.measures` (a hit metric such as the pointing game as a bool column)."""
    types: dict[str, pa.DataType] = {
        "index": pa.int64(),
        "method": pa.string(),
        "label": pa.int64(),
        "prediction": pa.int64(),
        "prediction_score": pa.float64(),
        "target": pa.int64(),
    }
    hits = {column_name(metric) for metric in audit_metrics() if metric.boolean}
    types.update({name: pa.bool_() if name in hits else pa.float64() for name in measures()})
    return types


def _metric_columns(batch: MetricInputs) -> dict[str, list]:
    """The audit's metrics of one method's maps (:func:`~.measures.audit_metrics`), per row; with masks also
    ``mask_area``. Rows whose mask has no object pixel on the model input get ``None`` for the metrics that
    need masks (they are undefined there)."""
    out: dict[str, list] = {}
    valid = None if batch.masks is None else batch.masks.flatten(1).any(dim=1)
    if batch.masks is not None:
        out["mask_area"] = batch.masks.double().mean(dim=(1, 2)).tolist()
    for metric in audit_metrics():
        if not metric.applies_to(batch):
            continue
        column: list = [None] * len(batch.maps)
        if valid is None or not metric.needs_masks:
            column = metric.values(batch)
        elif valid.any():
            for index, value in zip(valid.nonzero().flatten().tolist(), metric.values(batch.rows(valid)), strict=True):
                column[index] = value
        out[column_name(metric)] = (
            [None if value is None else bool(value) for value in column] if metric.boolean else column
        )
    return out
