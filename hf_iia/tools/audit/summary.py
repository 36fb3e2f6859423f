"""Per-class and overall tables of the per-row results, the flags of each class and the verdict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import AuditConfig, Thresholds
from .indicators import CORNERS, corner_column, region_masks
from .measures import OBJECT_MASS, measures

if TYPE_CHECKING:
    import pandas


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
    # The per-row measures (:func:`~.measures.measures`) the rows hold values of: the mask ones only with masks.
    present = [name for name in measures() if name in frame and frame[name].notna().any()]
    summary: dict[str, Any] = {
        "model": config.model,
        "dataset": config.dataset,
        "split": config.split,
        "rows": int(frame["index"].nunique()),
        "methods": list(methods),
        "has_labels": bool(has_labels),
        "has_masks": OBJECT_MASS in present,
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
        summary["overall"][method] = _means(rows, present, has_labels)
        classes = []
        for group, members in rows.groupby("group"):
            name = class_names.get(int(group), str(group))
            entry = {"class": int(group), "name": name, **_means(members, present, has_labels)}
            entry["flags"] = _flags(entry, areas, thresholds)
            classes.append(entry)
        summary["classes"][method] = classes
        summary["spread"][method] = {
            name: {
                "std": _number(np.std([entry[name] for entry in classes])),
                "range": _number(np.ptp([entry[name] for entry in classes])),
            }
            for name in ("border_mass", "corner_mass", OBJECT_MASS)
            if classes[0].get(name) is not None
        }
        summary["verdict"][method] = _verdict(classes)
    if has_labels:
        summary["label_fit"] = _label_fit(frame, class_names)
        if not summary["label_fit"]["fits"]:
            for method in summary["verdict"]:
                summary["verdict"][method] = {"flagged": [], "text": summary["label_fit"]["text"]}
    return summary


def _label_fit(frame: pandas.DataFrame, class_names: dict[int, str]) -> dict[str, Any]:
    """Whether the model solves the dataset's task at all: a spurious-cue verdict on a model whose classes do
    not match the labels (accuracy near chance) would be spurious itself.

    The model fits when its accuracy on the labelled rows is at least twice chance and 10 points above it
    (chance = 1 / the number of distinct labels)."""
    rows = frame.drop_duplicates("index")
    accuracy = float((rows["prediction"] == rows["label"]).mean())
    chance = 1.0 / max(1, rows["label"].nunique())
    fits = accuracy >= max(2 * chance, chance + 0.1)
    text = (
        f"The model fits the labels: accuracy {accuracy:.0%} against chance {chance:.0%}."
        if fits
        else f"Not assessed: the model's predictions do not fit the dataset's labels (accuracy {accuracy:.0%}, chance "
        f"{chance:.0%}), so its classes and the labels likely mean different things; a spurious-cue verdict needs "
        "a model that solves the task. Check that the dataset's labels are the model's classes (id2label)."
    )
    return {"accuracy": accuracy, "chance": chance, "fits": fits, "text": text}


def _means(rows: pandas.DataFrame, names: Sequence[str], has_labels: bool) -> dict[str, Any]:
    """``n``, ``accuracy`` (with labels), the mean of every measure over ``rows``, and the corner
    whose mean share is largest (``corner``) with that share (``corner_mass``)."""
    means: dict[str, Any] = {"n": int(len(rows))}
    if has_labels:
        means["accuracy"] = _number(rows["correct"].mean())
    for name in names:
        means[name] = _number(rows[name].astype(float).mean())
    means["corner"] = max(CORNERS, key=lambda corner: means[corner_column(corner)])
    means["corner_mass"] = means[corner_column(means["corner"])]
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
    if entry.get(OBJECT_MASS) is not None and entry[OBJECT_MASS] <= thresholds.object_lift * entry["mask_area"]:
        flags.append(
            f"off-object: only {entry[OBJECT_MASS]:.0%} of the map mass on the object "
            f"({entry['mask_area']:.0%} of the image)"
        )
    return flags


def _verdict(classes: list[dict[str, Any]]) -> dict[str, Any]:
    """The flagged classes and one plain sentence."""
    flagged = [
        {"class": entry["class"], "name": entry["name"], "reasons": entry["flags"]}
        for entry in classes
        if entry["flags"]
    ]
    if not flagged:
        text = f"No class concentrates its attribution off-object ({len(classes)} classes checked)."
    else:
        names = ", ".join(repr(entry["name"]) for entry in flagged)
        text = (
            f"{len(flagged)} of {len(classes)} classes concentrate their attribution off-object ({names}): "
            "the model likely relies on a spurious cue there."
        )
    return {"flagged": flagged, "text": text}
