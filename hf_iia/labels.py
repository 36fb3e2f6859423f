"""Class targets from indices and label names, without torch: the explainer and the command line's early checks
(before any model loads) read one rule."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import TargetError

INT64_MAX = 2**63 - 1  # a class index becomes an int64 tensor


def class_index(target: int, classes: int | None) -> int:
    """``target`` checked against ``classes`` (the model's number of classes; ``None``: unknown).

    Raises:
        TargetError: a negative index, one of at least ``classes``, or one past int64.
    """
    if target < 0 or (classes is not None and target >= classes) or target > INT64_MAX:
        valid = f"0..{classes - 1}" if classes else "non-negative indices"
        raise TargetError(f"target {target} is out of range; valid class indices are {valid}")
    return target


def label_index(labels: dict[int, str], name: str) -> int:
    """The class whose ``id2label`` name is ``name``: exactly, else ignoring case, else one of its comma-separated
    synonyms ignoring case (``"tabby"`` in ``"tabby, tabby cat"``).

    Raises:
        TargetError: no labels, no match, or several matches at the first rule that matches at all.
    """
    if not labels:
        raise TargetError(f"target {name!r} is a label name, but the model has no id2label; pass a class index")
    for match in (
        lambda label: label == name,
        lambda label: label.casefold() == name.casefold(),
        lambda label: name.casefold() in (part.strip().casefold() for part in label.split(",")),
    ):
        found = [index for index, label in labels.items() if match(label)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise TargetError(f"label {name!r} matches several classes {[labels[i] for i in found]}; pass the index")
    close = [label for label in labels.values() if name.casefold()[:4] in label.casefold()][:5]
    raise TargetError(f"unknown label {name!r}; close labels: {close or 'none'}; see explainer.id2label")


@dataclass(frozen=True)
class Selection:
    """Several targets per image, chosen from its scores: the ``top_k`` best classes, or every class whose score
    (``Explanation.score``) is at least ``threshold`` (for multi-label heads); exactly one of the two is set."""

    top_k: int | None = None
    threshold: float | None = None


_SPEC = re.compile(r"^(top_k|threshold):(.+)$")


def selection(target: object, top_k: object = None, threshold: object = None) -> Selection | None:
    """The :class:`Selection` that ``target="top_k:3"`` / ``"threshold:0.5"``, ``top_k=3`` or ``threshold=0.5`` asks
    for; ``None`` when none does (one target per image).

    Raises:
        TargetError: both ``top_k`` and ``threshold``, either beside another ``target``, a ``top_k`` that is not a
            positive int, or a ``threshold`` that is not a finite number.
    """
    if isinstance(target, str) and (match := _SPEC.match(target.strip())):
        if top_k is not None or threshold is not None:
            raise TargetError(f"target={target!r} and top_k=/threshold= ask for the same thing; give one of them")
        name, value = match.groups()
        try:
            number = int(value) if name == "top_k" else float(value)
        except ValueError:
            raise TargetError(
                f"target={target!r}: {value!r} is not {'an int' if name == 'top_k' else 'a number'}; "
                "e.g. target='top_k:3' or target='threshold:0.5'"
            ) from None
        top_k, threshold = (number, None) if name == "top_k" else (None, number)
    elif top_k is None and threshold is None:
        return None
    elif target is not None:
        raise TargetError(
            f"top_k= and threshold= choose the targets from the scores; leave target= out (got {target!r}), or "
            "pass target= a list of the classes to explain"
        )
    if top_k is not None and threshold is not None:
        raise TargetError(
            "give top_k= or threshold=, not both (top_k: the k best classes; threshold: every class "
            "scoring at least that much)"
        )
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise TargetError(f"top_k must be a positive int, got {top_k!r}")
        return Selection(top_k=top_k)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise TargetError(f"threshold must be a finite number (a score, e.g. 0.5), got {threshold!r}")
    return Selection(threshold=float(threshold))
