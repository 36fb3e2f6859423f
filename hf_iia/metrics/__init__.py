"""Faithfulness and localisation metrics for saliency maps.

Independent of the explainers: only ``torch`` and ``numpy`` are used. See
:mod:`hf_iia.metrics.perturbation` (deletion / insertion, positive / negative
perturbation) and :mod:`hf_iia.metrics.localization` (pointing game, energy
pointing game, mask AP / ROC AUC), and the protocol IIA's authors report:
:mod:`hf_iia.metrics.protocol` (POS / NEG / DEL / INS with black pixels, ADP / PIC),
:mod:`hf_iia.metrics.information` (SIC / AIC) and :mod:`hf_iia.metrics.segmentation`
(pixel accuracy, mIoU, mAP, mF1). The directory ``hf_iia/metrics/del_ins`` is a
Hugging Face ``evaluate`` module: ``evaluate.load("<path>/hf_iia/metrics/del_ins")``.
"""

from .information import (
    DEFAULT_PIC_THRESHOLDS,
    InformationCurve,
    gaussian_bokeh,
    information_curve,
    random_pixel_masks,
    webp_size,
)
from .localization import energy_pointing_game, mask_auroc, mask_average_precision, pointing_game
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
from .protocol import ConfidenceChange, black_fill, confidence_change, min_max_normalise, paper_perturbation_auc
from .segmentation import SegmentationScores, segmentation_scores

__all__ = [
    "DEFAULT_PERTURBATION_FRACTIONS",
    "DEFAULT_PIC_THRESHOLDS",
    "ConfidenceChange",
    "InformationCurve",
    "SegmentationScores",
    "black_fill",
    "confidence_change",
    "gaussian_bokeh",
    "information_curve",
    "min_max_normalise",
    "paper_perturbation_auc",
    "random_pixel_masks",
    "segmentation_scores",
    "webp_size",
    "Forward",
    "MetricInputError",
    "PerturbationCurve",
    "deletion_auc",
    "deletion_curve",
    "energy_pointing_game",
    "gaussian_blur",
    "insertion_auc",
    "insertion_curve",
    "mask_auroc",
    "mask_average_precision",
    "perturbation_auc",
    "perturbation_curve",
    "pointing_game",
]
