"""The ``hf-iia`` command line: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import (
    AuditError,
    CheckpointError,
    IIAError,
    ImageInputError,
    LayerNotFoundError,
    MethodError,
    TargetError,
)

METHOD_NAMES: tuple[str, ...] = (
    "iia",
    "ig",
    "gradcam",
    "gradcam++",
    "layercam",
    "scorecam",
    "attention_rollout",
    "gradient_rollout",
    "gae",
    "attnlrp",
    "legrad",
)
""":func:`hf_iia.methods.available_methods`, spelled out so that ``--help`` need not import torch
(a test keeps the two equal); the library validates ``--method`` itself (``MethodError``)."""

PRESET_NAMES: tuple[str, ...] = ("default", "reference", "iia3")
"""The presets every family declares (``Family.presets``), for ``--preset`` (a test keeps them equal)."""

COMBINE_NAMES: tuple[str, ...] = ("deepest", "earliest", "product", "sum")
"""The keys of :data:`hf_iia.fusions.LEVEL_FUSIONS`, for ``--combine`` (a test keeps them equal)."""

START_NAMES: tuple[str, ...] = ("mean", "black", "blur")
""":data:`hf_iia.presets.STARTS`, for ``--start`` (a test keeps them equal)."""

BENCH_METHOD_KEYS: tuple[str, ...] = (
    "iia",
    "iia-reference",
    "iia-multilayer",
    "iia3",
    "iia3-earliest",
    "iia3-product",
    *METHOD_NAMES[1:],
)
"""The keys of :data:`hf_iia.tools.bench.evaluate.METHOD_SPECS` (IIA's bench variants, then every other method), for
``bench --help`` (a test keeps them equal)."""


SYNTHETIC_DATASET_NAMES: tuple[str, ...] = ("synthetic", "synthetic-shortcut")
"""The audit's built-in datasets (:data:`hf_iia.tools.audit.SYNTHETIC_DATASETS`), spelled out for the same reason
(a test keeps the two equal): any other ``--dataset`` is checked as a folder or a Hub id before anything loads."""


def _help(command: object) -> str:
    """A command's docstring as ``--help`` text: plain text, without reStructuredText's double backticks."""
    return (command.__doc__ or "").replace("``", "")


def _model_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose the method and its default layer, and where the model runs (every subcommand that
    builds an explainer reads them)."""
    parser.add_argument(
        "--method",
        default="iia",
        metavar="METHOD",
        help=f"attribution method: {', '.join(METHOD_NAMES)} (default: iia); the others are comparison methods",
    )
    parser.add_argument("--preset", choices=PRESET_NAMES, default=None)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: best available)")


def _explainer_options(parser: argparse.ArgumentParser) -> None:
    """The options of the subcommands that compute maps."""
    parser.add_argument(
        "--target",
        action="append",
        metavar="TARGET",
        help="class index or label name (default: the top-1 class); repeat it to explain every image for each "
        "target (outputs <image>_<method>_<target>.png)",
    )
    _model_options(parser)
    parser.add_argument(
        "--combine",
        choices=COMBINE_NAMES,
        help="where a CNN's map is formed when several layers are integrated (default: deepest)",
    )
    parser.add_argument("--start", choices=START_NAMES, help="the image path's start for iia and ig (default: mean)")
    parser.add_argument(
        "--steps",
        type=_count(0),
        nargs="+",
        help="steps per path (one for all, or image path first; 0 = no integral on that path, only the point a = 1); "
        "for --method ig the step count",
    )
    parser.add_argument(
        "--layer",
        nargs="+",
        help="layer(s) to integrate over: an index (-2) or a dotted name; see `hf-iia layers MODEL`",
    )
    parser.add_argument("--internal-batch-size", type=_count(1))
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _count(smallest: int):
    """An argparse type: an int of at least ``smallest`` (a bad value is a usage error before anything loads)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < smallest:
            raise argparse.ArgumentTypeError(f"must be at least {smallest}, got {number}")
        return number

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def _note_zero_steps(steps: Sequence[int] | None) -> None:
    """Say what ``--steps 0`` means: it is legal, but easy to mistake for "default" or "none"."""
    if steps and 0 in steps:
        print(
            "hf-iia: note: --steps 0 leaves that path without an integral: only its point a = 1 is evaluated",
            file=sys.stderr,
        )


LAYER_SYNTAX = re.compile(r"-\d+|[\w-]+(\.[\w-]+)*")
"""What ``--layer`` takes: an index (``-2``) or a dotted module name (``resnet.encoder.stages.3``, ``0.conv``;
``nn.Module`` names are identifiers or indices, and ``-`` is allowed for the odd hand-made name)."""


def _check_arguments(args: argparse.Namespace, images: Sequence[str] = ()) -> None:
    """What is checkable without torch, before the model loads (seconds, not the 10-20 of a load): the method's
    name, the ``--layer`` syntax and the image files (see :func:`_check_images`). The model and the targets follow
    in :func:`_check_model`; whether a layer exists needs the model."""
    if args.method not in METHOD_NAMES:
        raise MethodError(f"unknown method {args.method!r}; choose one of {sorted(METHOD_NAMES)}")
    for value in getattr(args, "layer", None) or []:
        if not LAYER_SYNTAX.fullmatch(value):
            raise LayerNotFoundError(
                f"--layer {value!r} is neither an index (-2) nor a dotted module name (resnet.encoder.stages.3); "
                "see `hf-iia layers MODEL` for the names"
            )
    _check_images(images)


def _check_images(images: Sequence[str]) -> None:
    """Each image is a readable file whose header PIL identifies (no decode: a truncated file still fails later)."""
    from PIL import Image, UnidentifiedImageError

    for image in images:
        path = Path(image).expanduser()
        if not path.exists():
            raise ImageInputError(f"image file {image} does not exist (looked in {Path.cwd()})")
        if path.is_dir():
            raise ImageInputError(f"{image} is a folder, not an image file; pass the files in it, e.g. {image}/*.jpg")
        try:
            with Image.open(path):
                pass
        except UnidentifiedImageError:
            raise ImageInputError(
                f"{image} is not an image file PIL can read (no known image header); pass a PNG, JPEG, WebP, ... file"
            ) from None
        except OSError as error:
            raise ImageInputError(
                f"cannot read {image} ({error.strerror or error}); check that it is readable"
            ) from None
        except Image.DecompressionBombError as error:  # PIL refuses a huge image's header at once
            raise ImageInputError(f"{image} is too large to decode safely ({error})") from None


def _checkpoint_labels(model: str) -> dict[int, str] | None:
    """The class names in the checkpoint's config.json, read as JSON (no transformers): a local folder's, or a Hub
    id's in the local cache. ``None`` when unknown (an uncached Hub id, a config without labels).

    Raises:
        CheckpointError: a local folder without config.json (often the folder above the checkpoint), or a
            config.json that :func:`hf_iia.loading.read_config_file` refuses.
    """
    folder = Path(model).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        if not config.is_file():
            inside = sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())[:3]
            hint = f"; these folders in it are: {inside}" if inside else ""
            raise CheckpointError(
                f"{model} is not a checkpoint folder: it has no config.json (save_pretrained writes config.json and "
                f"the weights); pass the checkpoint folder itself{hint}"
            )
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    from ..loading import read_config_file

    settings = read_config_file(config)
    labels = settings.get("id2label")
    if isinstance(labels, dict):
        return {int(key): str(name) for key, name in labels.items()}
    names = settings.get("label_names")  # timm's TimmWrapperConfig
    if isinstance(names, list):
        return dict(enumerate(map(str, names)))
    return None


def _check_model(model: str, targets: Sequence[str], candidate_labels: Sequence[str] | None = None) -> None:
    """The model is a local checkpoint folder or a reachable Hub id, and each target names one of its classes (when
    its config.json is at hand), or one of a zero-shot model's ``candidate_labels``."""
    from ..labels import class_index, label_index
    from ..loading import check_source

    check_source(model)
    labels = dict(enumerate(candidate_labels)) if candidate_labels else _checkpoint_labels(model)
    for value in targets:
        target = _target(value)
        if isinstance(target, int):
            class_index(target, len(labels) if labels else None)
        elif labels is not None:
            label_index(labels, value)


def _make_explainer(args: argparse.Namespace, model: str, targets: Sequence[str] = ()):
    """The explainer the options ask for, after every check that needs no model (:func:`_check_model`, the device).

    ``layers`` has only the options of :func:`_model_options`; the others default to the library's."""
    from ..loading import check_device

    candidate_labels = _candidate_labels(getattr(args, "labels", None))
    # Before the heavy imports: a missing folder, an unreachable Hub or a missing device fails in a second or two.
    _check_model(model, targets, candidate_labels)
    check_device(args.device)
    steps = getattr(args, "steps", None)
    _note_zero_steps(steps)
    from ..explainer import IIAExplainer

    layers = [_layer(value) for value in getattr(args, "layer", None) or []]
    layer = layers[0] if len(layers) == 1 else (layers or None)
    return IIAExplainer(
        model,
        method=args.method,
        layer=layer,
        preset=args.preset,
        steps=_steps(steps),
        device=args.device,
        internal_batch_size=getattr(args, "internal_batch_size", None),
        combine=getattr(args, "combine", None),
        start=getattr(args, "start", None),
        candidate_labels=candidate_labels,
        hypothesis_template=getattr(args, "hypothesis_template", None),
    )


def _candidate_labels(value: str | None) -> list[str] | None:
    """``--labels "a cat,a dog"`` as ``candidate_labels=`` takes it (``None`` when not given).

    Raises:
        TargetError: an empty label (two commas, a trailing comma).
    """
    if value is None:
        return None
    labels = [label.strip() for label in value.split(",")]
    if not all(labels):
        raise TargetError(f"--labels {value!r} has an empty label; separate non-empty labels with commas")
    return labels


def _steps(values: Sequence[int] | None) -> int | tuple[int, ...] | None:
    """``--steps`` as ``steps=`` takes it: one count for every path, or one per path (image path first)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _layer(value: str) -> int | str:
    """``--layer`` takes what ``layer=`` takes: an index (``-2``) or a dotted name."""
    return int(value) if value.lstrip("-").isdigit() else value


def _target(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else value


MAX_STEM_BYTES = 160
"""Longest input stem kept whole in an output name (``<stem>_<method>_<target>.png`` and its temporary twin stay
below the usual 255-byte limit); a longer one is cut and given the hash of the input's path."""

MAX_TARGET_BYTES = 48
"""Longest ``--target`` kept whole in an output name; a longer one is cut and given its hash."""


def _target_file_names(targets: Sequence[str]) -> list[str]:
    """How each ``--target`` is spelled in output names: as given when that is a safe file name of at most
    :data:`MAX_TARGET_BYTES`, else cut and given a short hash of the target.

    Raises:
        OutputPathError: two targets that would share an output name (the same value twice, or two spellings that
            differ only in case, which a case-insensitive file system would confuse).
    """
    from ..errors import OutputPathError
    from ..outputs import safe_name

    names: dict[str, str] = {}  # casefolded file name -> the target that has it
    spelled = []
    for target in targets:
        name = safe_name(target)
        if name != target or len(name.encode()) > MAX_TARGET_BYTES:
            cut = name.encode()[:MAX_TARGET_BYTES].decode(errors="ignore")
            name = f"{cut}-{hashlib.sha1(target.encode()).hexdigest()[:8]}"
        if name.casefold() in names:
            raise OutputPathError(
                f"--target {target!r} and --target {names[name.casefold()]!r} would write the same files; give each "
                "target once"
            )
        names[name.casefold()] = target
        spelled.append(name)
    return spelled


def _output_paths(
    sources: Sequence[str], out: Path, overwrite: bool, method: str, target: str | None = None
) -> list[tuple[Path, Path]]:
    """The ``(png, npy)`` paths of each input, checked before any compute so a refusal costs nothing.

    A name is ``<stem>_<method>`` without a target and ``<stem>_<method>_<target>`` with one (``target``: as
    :func:`_target_file_names` spells it), so two targets of one image never share a file. The stem is the
    input's when that is already a safe file name, unique and not too long; otherwise (characters replaced, the
    same stem from another folder, or longer than :data:`MAX_STEM_BYTES`) a short hash of the full input path is
    appended, so two inputs can never share an output and every output is traceable to its input.
    """
    from ..outputs import output_path, safe_name

    stems: list[str] = []
    for source in sources:
        name = Path(source).stem
        stem = safe_name(name)
        if stem != name or stem in stems or len(os.fsencode(stem)) > MAX_STEM_BYTES:
            # A file system takes names of at most 255 bytes, and the atomic write adds a temporary suffix.
            stem = stem.encode()[:MAX_STEM_BYTES].decode(errors="ignore")
            stem = f"{stem}-{hashlib.sha1(os.fsencode(os.path.abspath(source))).hexdigest()[:8]}"
        stems.append(stem)
    suffix = method.replace("+", "p")  # e.g. photo_iia, photo_gradcampp
    if target is not None:
        suffix = f"{suffix}_{target}"  # e.g. photo_iia_3, photo_iia_tabby
    return [
        (
            output_path(out, f"{stem}_{suffix}.png", overwrite=overwrite),
            output_path(out, f"{stem}_{suffix}.npy", overwrite=overwrite),
        )
        for stem in stems
    ]


def _planned_outputs(
    args: argparse.Namespace, sources: Sequence[str], out: Path
) -> list[tuple[str | None, list[tuple[Path, Path]]]]:
    """``(target, its (png, npy) paths per input)`` for each ``--target`` (one ``None`` entry without one)."""
    targets = args.target or []
    if not targets:
        return [(None, _output_paths(sources, out, args.overwrite, args.method))]
    names = _target_file_names(targets)
    return [
        (target, _output_paths(sources, out, args.overwrite, args.method, name))
        for target, name in zip(targets, names, strict=True)
    ]


def _title(explanation, model: str, method: str, given: bool) -> str:
    """What an overlay shows, as its figure's title: the model, the method, the target and its probability."""
    name = Path(model).name or model
    target = f"{explanation.label} (class {explanation.target})" if explanation.label else f"class {explanation.target}"
    how = "" if given else ", the top-1 class"
    return f"{name} · {method}\ntarget {target}{how} · p = {explanation.score:.3f}"


def _write_explanations(
    explanations,
    sources: Sequence[str],
    paths: Sequence[tuple[Path, Path]],
    *,
    model: str,
    method: str,
    given: bool,
) -> list[dict]:
    """Write each overlay (a figure with a title and a colour bar) and map; return one record per input naming
    its files. ``given``: whether the target was given (else the top-1 class)."""
    import numpy as np

    from ..outputs import write_atomic
    from ..viz import annotated_overlay

    records = []
    for explanation, source, (png, npy) in zip(explanations, sources, paths, strict=True):
        image, heatmap = explanation.canvas()
        title = _title(explanation, model, method, given)
        if explanation.overlay_note is not None:  # never a map stretched over the photo: say what is drawn instead
            title += "\ndrawn on the model input: the processor's resize/crop of this image is not established"
        figure = annotated_overlay(image, heatmap, title, zero_level=explanation.zero_level)
        buffer = io.BytesIO()
        figure.save(buffer, format="PNG")
        write_atomic(png, buffer.getvalue())
        buffer = io.BytesIO()
        np.save(buffer, explanation.heatmap)
        write_atomic(npy, buffer.getvalue())
        records.append(
            {
                "image": source,
                "method": method,
                "target": explanation.target,
                "label": explanation.label,
                "score": explanation.score,
                "zero_level": explanation.zero_level,
                "overlay_note": explanation.overlay_note,
                "overlay": str(png),
                "map": str(npy),
            }
        )
    return records


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain image files; write <stem>_<method>.png overlays and <stem>_<method>.npy maps into --out
    (<stem>_<method>_<target>.* with --target)."""
    from ..outputs import check_output_folder

    _check_arguments(args, args.images)
    check_output_folder(args.out)  # an unwritable --out fails now, not after every map was computed
    plans = _planned_outputs(args, args.images, Path(args.out))
    explainer = _make_explainer(args, args.model, args.target or [])
    for target, paths in plans:
        explanations = explainer(list(args.images), target=_target(target))
        records = _write_explanations(
            explanations, args.images, paths, model=args.model, method=explainer.method, given=target is not None
        )
        for record in records:
            print(json.dumps(record))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Explain the bundled sample photos with a real ImageNet EfficientNet-Lite0; write overlays and a grid."""
    from ..outputs import check_output_folder, output_path, write_atomic
    from .demo import SAMPLE_NAMES, build_lite0_checkpoint, demo_figure, sample_images

    _check_arguments(args)
    check_output_folder(args.out)
    if args.target and len(args.target) > 1:
        raise IIAError("the demo draws one grid, for one target; give --target once (or use hf-iia explain)")
    out = Path(args.out)
    ((target, paths),) = _planned_outputs(args, SAMPLE_NAMES, out)
    grid_path = output_path(out, "demo_grid.png", overwrite=args.overwrite)
    photos = sample_images()
    names = [name for name, _ in photos]
    checkpoint = build_lite0_checkpoint(out / "efficientnet_lite0")
    explainer = _make_explainer(args, str(checkpoint), args.target or [])
    explanations = explainer([image for _, image in photos], target=_target(target))
    records = _write_explanations(
        explanations, names, paths, model=str(checkpoint), method=explainer.method, given=target is not None
    )
    write_atomic(grid_path, demo_figure(photos, explanations))
    for record in records:
        print(json.dumps(record))
    print(f"wrote {grid_path}; the checkpoint folder {checkpoint} loads with IIAExplainer({str(checkpoint)!r})")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    """List the layers a model can be explained at (the values --layer / layer= take), with their shapes."""
    _check_arguments(args)
    explainer = _make_explainer(args, args.model)
    default = set(explainer.adapter.levels)
    layers = explainer.layers()
    if not layers:
        raise MethodError(
            f"method {args.method!r} explains at the input and takes no --layer, so there are no layers to list; "
            "leave --method out to list the layers iia integrates over"
        )
    for index, (name, shape) in enumerate(layers):
        print(f"{index:3d}  {name}  {list(shape)}{'  (default)' if name in default else ''}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit a classifier on a dataset (faithfulness, localisation, spurious cues); write a model-card section."""
    from ..loading import check_device, check_source
    from ..outputs import safe_name

    # Before any heavy import: the model, the dataset (a folder, or a Hub id while offline) and the device.
    _check_model(args.model, [])
    if args.dataset not in SYNTHETIC_DATASET_NAMES:
        check_source(args.dataset, kind="dataset")
    check_device(args.device)
    _note_zero_steps(args.steps)
    synthetic = {"image_size": args.image_size, "seed": args.seed}  # what only the built-in datasets read
    given = [f"--{name.replace('_', '-')}" for name, value in synthetic.items() if value is not None]
    if given and args.dataset not in SYNTHETIC_DATASET_NAMES:
        raise AuditError(
            f"{' and '.join(given)} set the built-in datasets ({', '.join(SYNTHETIC_DATASET_NAMES)}); "
            f"{args.dataset} is read as it is, so leave them out"
        )
    from .audit import AuditConfig, run_audit

    config = AuditConfig(
        model=args.model,
        dataset=args.dataset,
        split=args.split,
        n=args.n,
        batch_size=args.batch_size,
        image_column=args.image_column,
        label_column=args.labels,
        mask_column=args.masks,
        compare=args.compare,
        layer=args.layer,
        preset=args.preset,
        steps=_steps(args.steps),
        perturbation_steps=args.perturbation_steps,
        internal_batch_size=args.internal_batch_size,
        device=args.device,
        labels_from_dataset=args.labels_from_dataset,
        hypothesis_template=args.hypothesis_template,
        **{name: value for name, value in synthetic.items() if value is not None},
    )
    out = Path(args.out or Path("model_cards") / safe_name(Path(args.model).name or args.model))
    summary = run_audit(config, out, overwrite=args.overwrite)
    if summary is not None:
        for method, verdict in summary["verdict"].items():
            print(f"{method}: {verdict['text']}")
        print(f"wrote {out / 'README.md'}")
    return 0


def _bench_command(args: argparse.Namespace) -> str:
    """The documented options of this bench run, as a command line to reproduce it (recorded in the results)."""
    words = ["hf-iia", "bench", "--suite", args.suite, "--out", args.out]
    if args.protocol != "rise":
        words += ["--protocol", args.protocol]
    for option in (
        "n",
        "methods",
        "device",
        "batch_size",
        "perturbation_steps",
        "internal_batch_size",
        "threads",
        "archs",
    ):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option.replace('_', '-')}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return " ".join(words)


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark IIA against the comparison methods (synthetic checkpoints or the real Lite0); write tables, JSON, maps."""
    if args.archs and args.suite == "real":
        raise IIAError(
            "--archs picks the synthetic suite's (or the textures suite's) checkpoints; the real suite has one model, "
            "so leave it out"
        )
    from ..outputs import check_output_folder
    from .bench.run import BenchConfig, run_bench

    check_output_folder(args.out)

    config = BenchConfig(
        suite=args.suite,
        out=args.out,
        protocol=args.protocol,
        n=args.n,
        methods=args.methods,
        device=args.device,
        batch_size=args.batch_size,
        perturbation_steps=args.perturbation_steps,
        internal_batch_size=args.internal_batch_size,
        threads=args.threads,
        models_dir=args.models_dir,
        archs=args.archs,
        checkpoint=args.checkpoint,
        overwrite=args.overwrite,
        command=_bench_command(args),
    )
    run_bench(config)
    print(f"wrote {Path(args.out) / 'results.md'}, results.json, maps.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-iia", description="Iterated Integrated Attributions for image classifiers"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    explain = commands.add_parser("explain", help=_help(cmd_explain))
    explain.add_argument("model", help="Hub id or local checkpoint folder")
    explain.add_argument("images", nargs="+", help="image files")
    explain.add_argument("--out", default="hf-iia-out", help="output folder (default: ./hf-iia-out)")
    _explainer_options(explain)
    explain.add_argument(
        "--labels",
        help='a zero-shot model\'s (CLIP, SigLIP, ...) candidate labels, comma-separated: "a cat,a dog"',
    )
    explain.add_argument(
        "--hypothesis-template",
        help='the prompt of each --labels label, with {} for the label (default: "This is a photo of {}.")',
    )
    explain.set_defaults(run=cmd_explain)

    demo = commands.add_parser("demo", help=_help(cmd_demo))
    demo.add_argument("--out", default="hf-iia-demo", help="output folder (default: ./hf-iia-demo)")
    _explainer_options(demo)
    demo.set_defaults(run=cmd_demo)

    layers = commands.add_parser("layers", help=_help(cmd_layers))
    layers.add_argument("model", help="Hub id or local checkpoint folder")
    _model_options(layers)  # what marks the default layer (the method and preset) and where the probe runs
    layers.set_defaults(run=cmd_layers)

    audit = commands.add_parser("audit", help=_help(cmd_audit))
    audit.add_argument("model", help="Hub id or local checkpoint folder")
    audit.add_argument(
        "--dataset",
        required=True,
        help="synthetic | synthetic-shortcut | a save_to_disk folder | an image folder | a Hub dataset id",
    )
    audit.add_argument("--split", help="dataset split (default: test, else validation, else train)")
    audit.add_argument("--n", type=int, default=240, help="number of images, the first N (default: 240)")
    audit.add_argument("--masks", help="column of object masks (default: 'mask' for the synthetic datasets)")
    audit.add_argument("--labels", help="column of ground-truth classes (default: 'label' if present)")
    audit.add_argument(
        "--labels-from-dataset",
        action="store_true",
        help="a zero-shot model (CLIP, SigLIP, ...): its candidate labels are the label column's ClassLabel names",
    )
    audit.add_argument(
        "--hypothesis-template",
        help='with --labels-from-dataset: the prompt of each label, {} for it (default: "This is a photo of {}.")',
    )
    audit.add_argument("--image-column", default="image")
    audit.add_argument("--compare", help="comparison method (default: gradcam for CNNs, gae for ViTs)")
    audit.add_argument(
        "--layer", help="layer IIA (and Grad-CAM) explain, a dotted module name (default: the last stage)"
    )
    audit.add_argument("--batch-size", type=int, default=16, help="images per batch and per resumable unit")
    audit.add_argument("--preset", choices=PRESET_NAMES, default=None)
    audit.add_argument(
        "--steps",
        type=_count(0),
        nargs="+",
        help="IIA steps per path (one for all, or image path first; 0 = a = 1 only)",
    )
    audit.add_argument("--perturbation-steps", type=int, default=20, help="deletion/insertion curve steps")
    audit.add_argument("--internal-batch-size", type=int)
    audit.add_argument("--image-size", type=int, help="side of the synthetic images (default: 64)")
    audit.add_argument("--seed", type=int, help="seed of the synthetic images (default: 0)")
    audit.add_argument("--device", help="cpu, cuda, ... (default: the process's Accelerate device)")
    audit.add_argument("--out", help="output folder (default: model_cards/<model-name>); rerun to resume")
    audit.add_argument("--overwrite", action="store_true", help="discard the audit (or card) in --out and audit afresh")
    audit.set_defaults(run=cmd_audit)

    bench = commands.add_parser("bench", help=_help(cmd_bench))
    bench.add_argument(
        "--suite",
        choices=["synthetic", "textures", "real"],
        required=True,
        help="synthetic: the tiny checkpoints under hf_iia/tools/bench/models on held-out images with object "
        "masks; textures: the same on real-texture images (hf_iia/tools/bench/models_textures); real: ImageNet "
        "EfficientNet-Lite0 on cropped sample photos",
    )
    bench.add_argument("--out", required=True, help="output folder (results.md, results.json, maps.png)")
    bench.add_argument(
        "--protocol",
        choices=("rise", "paper"),
        default="rise",
        help="rise: localisation + RISE deletion/insertion (default); paper: also the authors' protocol "
        "(POS/NEG, DEL/INS on black pixels, ADP/PIC, SIC/AIC, segmentation pixel acc./mIoU/mAP/mF1)",
    )
    bench.add_argument("--n", type=int, help="inputs per model (default: 300 synthetic or textures, all 35 real)")
    bench.add_argument(
        "--methods",
        nargs="+",
        help=f"bench methods (default: all that apply to each model): {' '.join(BENCH_METHOD_KEYS)}",
    )
    bench.add_argument("--device", help="cpu, cuda, ... (default: cpu)")
    bench.add_argument("--batch-size", type=int, default=8, help="images per attribute call (default: 8)")
    bench.add_argument("--perturbation-steps", type=int, default=50, help="deletion/insertion steps (default: 50)")
    bench.add_argument("--internal-batch-size", type=int)
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    bench.add_argument(
        "--archs",
        nargs="+",
        help="architectures (default: synthetic vit deit resnet convnext swin regnet; textures vit deit resnet)",
    )
    bench.add_argument("--overwrite", action="store_true", help="replace existing output files")
    bench.add_argument("--models-dir", help=argparse.SUPPRESS)  # tests: a folder of <arch>/ checkpoints
    bench.add_argument("--checkpoint", help=argparse.SUPPRESS)  # tests: the real suite's model folder
    bench.set_defaults(run=cmd_bench)
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
