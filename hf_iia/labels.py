"""Class targets from indices and label names, without torch: the explainer and the command line's early checks
(before any model loads) read one rule."""

from __future__ import annotations

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
