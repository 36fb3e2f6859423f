"""Faithfulness and localisation metrics for saliency maps.

Independent of the explainers: only ``torch``, ``numpy`` and the core's pure image operations
(:func:`hf_iia.imaging.gaussian_blur`, :func:`hf_iia.fusions.min_max`) are used. What every metric takes is
:mod:`hf_iia.metrics.inputs`; each metric is declared once, beside its code, in :mod:`hf_iia.metrics.registry`
(:func:`available_metrics`: key -> :class:`Metric`, with ``higher_is_better``). See
:mod:`hf_iia.metrics.perturbation` (deletion / insertion, positive / negative perturbation) and
:mod:`hf_iia.metrics.localization` (pointing game, energy pointing game, mask AP / ROC AUC), and the protocol
IIA's authors report: :mod:`hf_iia.metrics.protocol` (POS / NEG / DEL / INS with black pixels, ADP / PIC),
:mod:`hf_iia.metrics.information` (SIC / AIC) and :mod:`hf_iia.metrics.segmentation` (pixel accuracy, mIoU,
mAP, mF1); :mod:`hf_iia.metrics.sensitivity` (class sensitivity: how much a map changes with the class). The directory ``hf_iia/metrics/del_ins`` is a Hugging Face ``evaluate`` module:
``evaluate.load("<path>/hf_iia/metrics/del_ins")``.
"""

# The import order is the registration order, the order of the metrics' columns in the tables: keep it.
# isort: off
from .registry import Metric, available_metrics, get_metric, register_metric, unregister_metric
from .inputs import MetricInputs
from .localization import (
    energy_pointing_game,
    mask_auroc,
    mask_average_precision,
    object_energy_share,
    pointing_game,
)
from .perturbation import (
    DEFAULT_PERTURBATION_FRACTIONS,
    Forward,
    MetricInputError,
    PerturbationCurve,
    deletion_auc,
    deletion_curve,
    gaussian_blur,
    insertion_auc,
    insertion_curve,
    perturbation_auc,
    perturbation_curve,
)
from .protocol import (
    ConfidenceChange,
    black_fill,
    confidence_change,
    min_max_normalise,
    paper_perturbation_auc,
)
from .information import (
    DEFAULT_PIC_THRESHOLDS,
    InformationCurve,
    gaussian_bokeh,
    information_curve,
    random_pixel_masks,
    webp_size,
)
from .segmentation import SegmentationScores, segmentation_scores
from .sensitivity import class_sensitivity, map_correlation

# isort: on

__all__ = [
    "DEFAULT_PERTURBATION_FRACTIONS",
    "DEFAULT_PIC_THRESHOLDS",
    "ConfidenceChange",
    "InformationCurve",
    "Metric",
    "MetricInputs",
    "SegmentationScores",
    "available_metrics",
    "black_fill",
    "class_sensitivity",
    "confidence_change",
    "gaussian_bokeh",
    "get_metric",
    "information_curve",
    "map_correlation",
    "min_max_normalise",
    "paper_perturbation_auc",
    "random_pixel_masks",
    "register_metric",
    "segmentation_scores",
    "unregister_metric",
    "webp_size",
    "Forward",
    "MetricInputError",
    "PerturbationCurve",
    "deletion_auc",
    "deletion_curve",
    "energy_pointing_game",
    "object_energy_share",
    "gaussian_blur",
    "insertion_auc",
    "insertion_curve",
    "mask_auroc",
    "mask_average_precision",
    "perturbation_auc",
    "perturbation_curve",
    "pointing_game",
]
