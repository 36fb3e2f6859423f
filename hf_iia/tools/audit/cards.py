"""Model-card sections from audit summaries: Hub model-card format (YAML metadata + Markdown).

:func:`audit_card` turns the summary of :func:`hf_iia.tools.audit.run_audit` into a
``huggingface_hub.ModelCard``: the metadata (``ModelCardData``) carries the overall value of every
metric declared with ``model_card=True`` (deletion / insertion AUC, mask AP) of every method as
``eval_results``; the body is
one ``## Attribution audit`` section (verdict, overall tables, per-class tables, the
overlay grid, thresholds) meant to be pasted into the model's own card.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ...zeroshot import DEFAULT_TEMPLATE
from .measures import audit_metrics, column_name


def _eval_metrics() -> list[tuple[str, str]]:
    """``(summary key, name)`` of the metrics a card reports as Hub ``eval_results`` (``Metric.model_card``)."""
    return [
        (column_name(metric), metric.label[:1].upper() + metric.label[1:])
        for metric in audit_metrics()
        if metric.model_card
    ]


def _all_columns() -> list[tuple[str, str, str]]:
    """``(summary key, header, format)`` of every table column: the count, the accuracy, the audit's metrics
    (their name and direction, from the declarations), then the indicators without a direction."""
    return [
        ("n", "n", "d"),
        ("accuracy", "accuracy", ".1%"),
        *(
            (column_name(metric), f"{metric.label} {metric.arrow}", ".1%" if metric.percent else ".3f")
            for metric in audit_metrics()
        ),
        ("border_mass", "mass on border", ".1%"),
        ("corner_mass", "mass in most-attributed corner", ".1%"),
    ]


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#&$!{}])")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def markdown_text(text: object) -> str:
    """``text`` (a label, a path, a sentence holding them) as literal Markdown on one line: line breaks become
    spaces (a break would cut a table or a list item) and Markdown's special characters are backslash-escaped,
    ``|`` included (an unescaped one would split a table cell and shift every later column)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(text)))


def _code(text: object) -> str:
    """``text`` as an inline code span on one line, fenced by more backticks than it holds in a row."""
    text = _LINE_BREAKS.sub(" ", str(text))
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _columns(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The table columns that the summary has values for."""
    first = summary["overall"][summary["methods"][0]]
    return [column for column in _all_columns() if column[0] in first]


def _task(summary: dict[str, Any]) -> str:
    """The audited model's Hub task: ``zero-shot-image-classification`` for a zero-shot model audited over the
    dataset's class names (``labels_from_dataset``), else ``image-classification``."""
    zero_shot = summary["settings"].get("labels_from_dataset")
    return "zero-shot-image-classification" if zero_shot else "image-classification"


def _card_data(summary: dict[str, Any]) -> ModelCardData:
    """Metadata: tags, and the overall metrics of every method as ``eval_results`` (``huggingface_hub.EvalResult``,
    the card's ``model-index``: one per method and metric, the value rounded to 4 digits)."""
    dataset, split = summary["dataset"], summary["split"]
    task = _task(summary)
    results = [
        EvalResult(
            task_type=task,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=key,
            metric_name=f"{name} ({method})",
            metric_value=round(summary["overall"][method][key], 4),
        )
        for method in summary["methods"]
        for key, name in _eval_metrics()
        if summary["overall"][method].get(key) is not None
    ]
    return ModelCardData(
        model_name=Path(summary["model"]).name or summary["model"],
        library_name="transformers",
        pipeline_tag=task,
        tags=["hf-iia", "explainability", "attribution-audit"],
        eval_results=results or None,
    )


def audit_card(summary: dict[str, Any], grid_file: str) -> ModelCard:
    """The audit as a model card: YAML metadata + an ``## Attribution audit`` Markdown section.

    Args:
        summary: the summary returned by :func:`hf_iia.tools.audit.run_audit` (``summary.json``).
        grid_file: the overlay grid image, relative to the card.
    """
    methods = summary["methods"]
    columns = _columns(summary)
    headers = {key: header for key, header, _ in _all_columns()}
    areas, thresholds = summary["areas"], summary["settings"]["thresholds"]
    split = f" (split {_code(summary['split'])})" if summary["split"] else ""
    parts = [
        "## Attribution audit (hf-iia)",
        f"Audited with hf-iia on {summary['rows']} images of {_code(summary['dataset'])}{split}: "
        f"Iterated Integrated Attributions (`iia`) and {_code(methods[1])} for comparison; each image is explained "
        f"for its {'ground-truth class' if summary['has_labels'] else 'top-1 class'}, and classes are grouped "
        f"by {summary['grouped_by']}. Settings: {_settings(summary['settings'])}; maps at the model input size "
        f"{summary['input_size'][0]}x{summary['input_size'][1]}." + _zero_shot_note(summary),
        "### Verdict",
        *[_verdict_block(method, summary["verdict"][method]) for method in methods],
        "### Overall",
        markdown_table(
            ["method", *(header for _, header, _ in columns)],
            [
                [_code(method), *(_cell(summary["overall"][method].get(key), spec) for key, _, spec in columns)]
                for method in methods
            ],
        ),
        "Spread of the class means across classes (standard deviation / range); a cue used by some classes "
        "only shows up as a large spread:",
        markdown_table(
            ["method", *(headers[key] for key in summary["spread"][methods[0]])],
            [
                [_code(method), *(f"{spread['std']:.1%} / {spread['range']:.1%}" for spread in spreads.values())]
                for method, spreads in summary["spread"].items()
            ],
        ),
        *[_class_table(summary, method, columns) for method in methods],
        "### Examples",
        f"Each line: an image, then the {', '.join(map(_code, methods))} maps over it (flagged classes first).",
        f"![attribution overlays]({grid_file})",
        "### How to read this",
        "Deletion AUC: the target probability while the most attributed pixels are removed (lower = more "
        "faithful); insertion AUC: while they are restored on a blurred image (higher = more faithful). "
        "Shares are of the map's mass (the sum of its values in [0, 1]). A class is flagged when its mean "
        f"share in one corner square ({areas['corner']:.1%} of the image) reaches {thresholds['corner_lift']:g}x "
        f"that area; when the border band ({areas['border']:.0%} of the image) holds {thresholds['border_lift']:g}x "
        f"its area; or, with masks, when the object holds at most {thresholds['object_lift']:g}x its area share "
        "(no better than a uniform map). Results: `summary.json` (settings, tables, verdicts), `results.json` "
        "(the same plus per-image measures) and `results.parquet` (per image and method, maps included).",
    ]
    content = f"---\n{_card_data(summary).to_yaml()}\n---\n\n" + "\n\n".join(parts) + "\n"
    return ModelCard(content)


def _zero_shot_note(summary: dict[str, Any]) -> str:
    """For a zero-shot model: what it was scored over (the dataset's class names, through the template)."""
    settings = summary["settings"]
    if not settings.get("labels_from_dataset"):
        return ""
    template = settings.get("hypothesis_template") or DEFAULT_TEMPLATE
    return (
        " The model is a zero-shot classifier: it scored the dataset's class names as candidate labels, each "
        f"through the prompt {_code(template)}, as transformers' zero-shot-image-classification pipeline scores them."
    )


def _settings(settings: dict[str, Any]) -> str:
    """The settings that change the numbers, as ``name=value`` pairs (defaults left out)."""
    shown = ("n", "layer", "preset", "steps", "perturbation_steps", "labels_from_dataset", "hypothesis_template")
    return ", ".join(_code(f"{name}={settings[name]}") for name in shown if settings.get(name) is not None)


def _verdict_block(method: str, verdict: dict[str, Any]) -> str:
    lines = [f"**{_code(method)}**: {markdown_text(verdict['text'])}"]
    for entry in verdict["flagged"]:
        lines.append(f"- {_code(entry['name'])}: " + markdown_text("; ".join(entry["reasons"])))
    return "\n".join(lines)


def _class_table(summary: dict[str, Any], method: str, columns: list[tuple[str, str, str]]) -> str:
    rows = [
        [
            markdown_text(f"{entry['name']} ({entry['class']})"),
            *(_cell(entry.get(key), spec) for key, _, spec in columns),
            markdown_text(entry["corner"]),
            "⚠ " + "; ".join(flag.split(":")[0] for flag in entry["flags"]) if entry["flags"] else "ok",
        ]
        for entry in summary["classes"][method]
    ]
    table = markdown_table(["class", *(header for _, header, _ in columns), "that corner", "verdict"], rows)
    return f"### Per class: {_code(method)}\n\n{table}"
