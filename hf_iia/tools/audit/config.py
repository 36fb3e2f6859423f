"""What an audit measures and flags: :class:`AuditConfig` (saved in the manifest) and :class:`Thresholds`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


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
        labels_from_dataset: audit a zero-shot model (CLIP, SigLIP, ...) as a classifier over the label column's
            ``ClassLabel`` names, its candidate labels (``hf-iia audit --labels-from-dataset``).
        hypothesis_template: the prompt of each of those labels (default: the zero-shot pipeline's
            ``"This is a photo of {}."``); only with ``labels_from_dataset``.
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
    labels_from_dataset: bool = False
    hypothesis_template: str | None = None

    def manifest(self) -> dict[str, Any]:
        """The JSON form stored in ``raw/manifest.json`` (device left out: it may differ between runs; the zero-shot
        settings only when set, so an audit of a classifier started before they existed resumes)."""
        settings = asdict(self)
        settings.pop("device")
        for name in _ZERO_SHOT_SETTINGS:
            if not settings[name]:
                settings.pop(name)
        return json.loads(json.dumps(settings))


_ZERO_SHOT_SETTINGS = ("labels_from_dataset", "hypothesis_template")
