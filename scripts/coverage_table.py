"""Coverage table: every model type of transformers' image-classification mapping, as IIA explains it at full size.

For each type of ``hf_iia.testing.IMAGE_CLASSIFICATION_TYPES`` not in ``REFUSED``: a random-weight (seed 0) model of
the type's default config (``AutoConfig.for_model(type)``: the real architecture size, image size set to 224 where
the config has one), built with ``AutoModelForImageClassification.from_config``;
``IIAExplainer(model, processor=None)`` with its defaults; the seconds of one
``attribute(pixel_values [1, 3, 224, 224], target=0)`` after one warm-up call, with ``--threads`` torch threads.
Refused types are not built: their row gives the reason from ``hf_iia.adapters.registry.REFUSED``.

    python scripts/coverage_table.py --out docs/coverage.md
    python scripts/coverage_table.py --types swin efficientnet
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig

SIDE = 224


def _cpu_name() -> str:
    with open("/proc/cpuinfo") as stream:
        for line in stream:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def _config(model_type: str) -> PretrainedConfig:
    """The type's default config, at 224 px where it has an image size, naming its classifier class."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    from hf_iia.testing import MODEL_CLASS

    config = AutoConfig.for_model(model_type)
    names = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[model_type]
    # from_config fails on a type with several classes (deit) unless the config names one: the zoo's choice, else the first
    config.architectures = [MODEL_CLASS.get(model_type, names if isinstance(names, str) else names[0])]
    for part in (config, getattr(config, "vision_config", None)):
        image_size = getattr(part, "image_size", None)
        if isinstance(image_size, int):
            part.image_size = SIDE
        elif isinstance(image_size, (list, tuple)):
            part.image_size = [SIDE] * len(image_size)
    return config


def row(model_type: str) -> list[str]:
    """The table row of ``model_type``: type, representation, default layer, seconds per map, load average."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageClassification, Siglip2ImageProcessor

    from hf_iia import IIAExplainer
    from hf_iia.adapters.registry import REFUSED
    from hf_iia.adapters.stages import StageAdapter

    if model_type in REFUSED:
        return [model_type, f"refused: {REFUSED[model_type]}", "-", "-", "-"]
    torch.manual_seed(0)
    config = _config(model_type)
    model = AutoModelForImageClassification.from_config(config).eval()
    # A NaFlex model (siglip2) takes patch sequences with their masks and grids, which only their processor makes: they are
    # explained from an image through it (the default 256 patches of 16 px), every other type from pixel_values.
    naflex = model_type == "siglip2"
    processor = Siglip2ImageProcessor() if naflex else None
    explainer = IIAExplainer(model, processor=processor, progress=False)
    adapter = explainer.adapter
    layer = adapter.levels[-1]
    representation = explainer.family.name
    if isinstance(adapter, StageAdapter):
        representation += f", stage {adapter.layouts[layer]}"
    pixel_values = torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    image = Image.fromarray((pixel_values[0].permute(1, 2, 0).sigmoid() * 255).byte().numpy())

    def explain() -> object:
        return explainer(image, target=0) if naflex else explainer.attribute(pixel_values, target=0)

    explain()  # warm-up
    start = time.perf_counter()
    explain()
    seconds = time.perf_counter() - start
    return [model_type, representation, f"`{', '.join(adapter.levels)}`", f"{seconds:.2f}", _load()]


def main() -> None:
    from hf_iia.testing import IMAGE_CLASSIFICATION_TYPES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--types", nargs="+", default=list(IMAGE_CLASSIFICATION_TYPES), choices=IMAGE_CLASSIFICATION_TYPES
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the table (with its header) to this markdown file")
    args = parser.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    lines = [
        "# Coverage: transformers image-classification types",
        "",
        f"- machine: {_cpu_name()}, {os.cpu_count()} cores shared with other jobs, no GPU; torch {torch.__version__} "
        f"({args.threads} threads), transformers {transformers.__version__}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average (1/5/15 min) at "
        f"start: {_load()}",
        f"- command: `PYTHONPATH=. python {' '.join(['scripts/coverage_table.py', *sys.argv[1:]])}`",
        "- default configs (`AutoConfig.for_model(type)`, image size 224), random weights (seed 0), float32, one "
        "`attribute(pixel_values [1, 3, 224, 224], target=0)` after one warm-up, the explainer's defaults (`IIAExplainer(model, processor=None)`); the load average is read after "
        "each type",
        "",
        "| type | representation | default layer | s/map (224 px, CPU) | load avg 1/5/15 min |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for model_type in args.types:
        try:
            cells = row(model_type)
        except Exception as error:  # a failing type is a row of the table, not the end of it
            cells = [model_type, f"failed: {type(error).__name__}: {error}".replace("\n", " "), "-", "-", _load()]
        line = "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"
        lines.append(line)
        print(line, flush=True)
    if args.out:
        with open(args.out, "w") as stream:
            stream.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
