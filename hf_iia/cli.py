"""The ``hf-iia`` command line: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import IIAError


def _explainer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="class index or label name (default: the top-1 class)")
    parser.add_argument("--preset", choices=["default", "reference"], default=None)
    parser.add_argument("--steps", type=int, nargs="+", help="steps per path (one for all, or image path first)")
    parser.add_argument("--layer", nargs="+", help="layer(s) to integrate over (dotted module names)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: best available)")
    parser.add_argument("--internal-batch-size", type=int)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _make_explainer(args: argparse.Namespace, model: str):
    from .explainer import IIAExplainer

    steps = args.steps[0] if args.steps and len(args.steps) == 1 else args.steps
    layer = args.layer[0] if args.layer and len(args.layer) == 1 else args.layer
    return IIAExplainer(
        model,
        layer=layer,
        preset=args.preset,
        steps=steps,
        device=args.device,
        internal_batch_size=args.internal_batch_size,
    )


def _target(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else value


def _save_explanations(explanations, names: Sequence[str], out: Path, overwrite: bool) -> list[dict]:
    from .outputs import output_path, safe_name, write_atomic

    records = []
    for explanation, name in zip(explanations, names):
        stem = safe_name(name)
        buffer = io.BytesIO()
        explanation.overlay().save(buffer, format="PNG")
        write_atomic(output_path(out, f"{stem}_iia.png", overwrite=overwrite), buffer.getvalue())
        buffer = io.BytesIO()
        np.save(buffer, explanation.heatmap)
        write_atomic(output_path(out, f"{stem}_iia.npy", overwrite=overwrite), buffer.getvalue())
        records.append({"image": name, "target": explanation.target, "label": explanation.label, "score": explanation.score})
    return records


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain image files; write ``<stem>_iia.png`` overlays and ``<stem>_iia.npy`` maps into ``--out``."""
    explainer = _make_explainer(args, args.model)
    explanations = explainer(list(args.images), target=_target(args.target))
    names = [Path(image).stem for image in args.images]
    for record in _save_explanations(explanations, names, Path(args.out), args.overwrite):
        print(json.dumps(record))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Explain the bundled sample photos with a real ImageNet EfficientNet-Lite0; write overlays and a grid."""
    from .demo import build_lite0_checkpoint, sample_images
    from .outputs import output_path, write_atomic
    from .viz import grid

    out = Path(args.out)
    checkpoint = build_lite0_checkpoint(out / "efficientnet_lite0")
    explainer = _make_explainer(args, str(checkpoint))
    photos = sample_images()
    explanations = explainer([image for _, image in photos], target=_target(args.target))
    records = _save_explanations(explanations, [name for name, _ in photos], out, args.overwrite)
    tiles, captions = [], []
    for (name, image), explanation in zip(photos, explanations):
        tiles += [image, explanation.overlay()]
        captions += [name, f"{explanation.label.split(',')[0]} {explanation.score:.2f}"]
    buffer = io.BytesIO()
    grid(tiles, captions, columns=4).save(buffer, format="PNG")
    grid_path = output_path(out, "demo_grid.png", overwrite=args.overwrite)
    write_atomic(grid_path, buffer.getvalue())
    for record in records:
        print(json.dumps(record))
    print(f"wrote {grid_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-iia", description="Iterated Integrated Attributions for image classifiers")
    commands = parser.add_subparsers(dest="command", required=True)

    explain = commands.add_parser("explain", help=cmd_explain.__doc__)
    explain.add_argument("model", help="Hub id or local checkpoint folder")
    explain.add_argument("images", nargs="+", help="image files")
    explain.add_argument("--out", default="hf-iia-out", help="output folder (default: ./hf-iia-out)")
    _explainer_options(explain)
    explain.set_defaults(run=cmd_explain)

    demo = commands.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--out", default="hf-iia-demo", help="output folder (default: ./hf-iia-demo)")
    _explainer_options(demo)
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except IIAError as error:
        print(f"hf-iia: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
