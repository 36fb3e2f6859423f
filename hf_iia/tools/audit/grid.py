"""``audit_grid.png``: images and each method's overlay for a few rows of the flagged classes first."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from PIL import Image

from ...data import decode_image
from ...explainer import Explanation
from .config import AuditConfig
from .data import fetch_rows
from .files import read_maps

if TYPE_CHECKING:
    import pandas

    from .auditor import Auditor

GRID_CLASSES = 8
GRID_EXAMPLES = 2
GRID_FILE = "audit_grid.png"
GRID_TILE = 160


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
        image = decode_image(rows[index][config.image_column], index, auditor.image_mode)
        tiles.append(_enlarged(image, GRID_TILE))
        captions.append(f"#{index} {name}")
        for method in auditor.methods:
            target, score = scores[(index, method)]
            explanation = Explanation(
                heatmap=maps[(index, method)],
                target=target,
                label=None,
                score=score,
                image=image,
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
