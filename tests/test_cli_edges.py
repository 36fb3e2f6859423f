"""The command line at its edges: mistakes refused before the model loads, outputs that say what they show,
signed maps drawn as signed, one file per target, and options that each do something."""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_iia import IIAExplainer
from hf_iia.explainer import zero_levels
from hf_iia.methods import METHODS
from hf_iia.testing import save_tiny
from hf_iia.tools.cli import _title, build_parser, main
from hf_iia.viz import SIGNED_LEGEND, UNSIGNED_LEGEND, annotated_overlay, overlay, signed_overlay


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> str:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return str(path)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels and holds none (an empty IDAT): what PIL reads on open."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"")


def test_mistakes_are_refused_before_transformers_is_imported(tiny_folder, tmp_path):
    """Each mistake that needs no model ends in 'hf-iia: error:' and exit 2 without importing transformers (a load
    takes 10-20 s), in a fresh interpreter."""
    image = _image(tmp_path / "x.png")
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "no_checkpoint").mkdir()
    (tmp_path / "huge.png").write_bytes(_png_header(20_000, 20_000))  # past PIL's decompression-bomb limit
    timm = save_tiny("timm_wrapper", tmp_path / "timm")  # labels in config.json's label_names
    model = str(tiny_folder("resnet"))
    out = ["--out", str(tmp_path / "out")]
    cases = [
        (["explain", model, str(tmp_path / "nope.png"), *out], "image file"),
        (["explain", model, str(tmp_path / "folder"), *out], "is a folder, not an image file"),
        (["explain", model, str(tmp_path / "text.png"), *out], "not an image file PIL can read"),
        (["explain", model, str(tmp_path / "empty.jpg"), *out], "not an image file PIL can read"),
        (["explain", model, str(tmp_path / "huge.png"), *out], "too large to decode safely"),
        (["explain", model, image, "--target", "9", *out], "target 9 is out of range; valid class indices are 0..4"),
        (["explain", model, image, "--target", "-1", *out], "target -1 is out of range"),
        (["explain", model, image, "--target", "zebra", *out], "unknown label 'zebra'"),
        (["explain", str(timm), image, "--target", "zebra", *out], "unknown label 'zebra'"),
        (["explain", str(timm), image, "--target", "4", *out], "valid class indices are 0..3"),
        (["explain", model, image, "--target", "dog", "--target", "dog", *out], "give each target once"),
        (["explain", model, image, "--layer", "stage 3", *out], "neither an index"),
        (["explain", model, image, "--method", "gradcum", *out], "unknown method 'gradcum'"),
        (["explain", str(tmp_path / "no_checkpoint"), image, *out], "has no config.json"),
        (["explain", str(tmp_path), image, *out], "these folders in it are: ['timm']"),
        (["layers", str(tmp_path / "no_checkpoint")], "has no config.json"),
        (["layers", model, "--method", "nope"], "unknown method 'nope'"),
        (["audit", str(tmp_path / "no_checkpoint"), "--dataset", "synthetic", *out], "has no config.json"),
        (["audit", model, "--dataset", str(tmp_path / "folder"), "--seed", "3", *out], "--seed set the built-in"),
        (["bench", "--suite", "real", "--archs", "vit", *out], "--archs picks the synthetic suite's"),
    ]
    code = (
        "import json, sys\n"
        "from hf_iia.tools.cli import main\n"
        "results = []\n"
        f"for argv in {[argv for argv, _ in cases]!r}:\n"
        "    try:\n"
        "        code = main(argv)\n"
        "    except SystemExit as exit:\n"
        "        code = exit.code\n"
        "    results.append((code, 'transformers' in sys.modules))\n"
        "print(json.dumps(results))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    results = json.loads(run.stdout.splitlines()[-1])
    errors = [line for line in run.stderr.splitlines() if line.startswith("hf-iia")]
    assert len(errors) == len(cases), run.stderr
    for (argv, message), (code, loaded), error in zip(cases, results, errors, strict=True):
        assert code == 2 and not loaded, (argv, code, loaded)
        assert error.startswith("hf-iia: error:") and message in error, (argv, error)
    assert not (tmp_path / "out").exists()


def test_labels_checked_early_are_the_ones_the_model_resolves(tiny_folder, tmp_path, capsys):
    """The early check reads config.json with the library's rule: a label in another case or one synonym of a
    comma-separated label passes, and the map is of that class."""
    image = _image(tmp_path / "x.png")
    argv = ["explain", str(tiny_folder("resnet")), image, "--out", str(tmp_path / "out"), "--steps", "1"]
    assert main([*argv, "--target", "DOG", "--target", "tabby"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["target"], r["label"]) for r in records] == [(1, "dog"), (3, "tabby, tabby cat")]


def test_two_targets_of_one_image_get_two_files(tiny_folder, tmp_path, capsys):
    image = _image(tmp_path / "photo.png")
    model, out = str(tiny_folder("resnet")), tmp_path / "out"
    base = ["explain", model, image, "--out", str(out), "--steps", "1"]
    assert main([*base, "--target", "cat", "--target", "1"]) == 0  # one run, two targets
    assert main([*base, "--target", "bird"]) == 0  # a second run, a third target
    assert main(base) == 0  # no target: the documented name
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["overlay"]).name for r in records] == [
        "photo_iia_cat.png",
        "photo_iia_1.png",
        "photo_iia_bird.png",
        "photo_iia.png",
    ]
    assert [r["target"] for r in records[:3]] == [0, 1, 2]
    maps = [np.load(r["map"]) for r in records[:3]]
    assert all(Path(r["map"]).exists() for r in records)
    # the files hold different targets' maps (the tiny model's maps of different classes differ by far more than
    # float noise: at least a tenth of the [0, 1] contrast somewhere)
    assert np.abs(maps[0] - maps[1]).max() > 0.1 and np.abs(maps[1] - maps[2]).max() > 0.1


def test_a_target_that_is_no_safe_file_name_gets_a_hashed_one(tiny_folder, tmp_path, capsys):
    image = _image(tmp_path / "photo.png")
    argv = ["explain", str(tiny_folder("resnet")), image, "--out", str(tmp_path / "out"), "--steps", "1"]
    assert main([*argv, "--target", "tabby, tabby cat"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert Path(record["overlay"]).name.startswith("photo_iia_tabby_tabby_cat-") and record["target"] == 3


class _Recording(argparse.Namespace):
    """A namespace that records which options are read."""

    def __getattribute__(self, name: str):
        if not name.startswith("_"):
            object.__getattribute__(self, "__dict__").setdefault("_read", set()).add(name)
        return object.__getattribute__(self, name)


def _options_read(argv: list[str]) -> tuple[set[str], set[str]]:
    """``(the options the subcommand's parser has, those its command read)`` for one run of ``argv``."""
    namespace = build_parser().parse_args(argv, namespace=_Recording())
    given = set(vars(namespace)) - {"_read", "command", "run"}
    vars(namespace)["_read"] = set()
    assert namespace.run(namespace) == 0
    return given, vars(namespace)["_read"]


@pytest.mark.parametrize("command", ["layers", "explain"])
def test_every_option_of_a_subcommand_is_read(command, tiny_folder, tmp_path, capsys):
    """``layers --help`` listed --target, --steps, --overwrite ... that layers never read: each option a
    subcommand's parser has is one its command reads."""
    model = str(tiny_folder("resnet"))
    argv = ["layers", model] if command == "layers" else ["explain", model, _image(tmp_path / "x.png")]
    given, read = _options_read(
        argv + (["--out", str(tmp_path / "out"), "--steps", "1"] if command == "explain" else [])
    )
    assert given <= read, given - read


def test_layers_for_a_method_without_layers_says_so(tiny_folder, capsys):
    assert main(["layers", str(tiny_folder("resnet")), "--method", "ig"]) == 2
    assert "hf-iia: error: method 'ig' explains at the input and takes no --layer" in capsys.readouterr().err


def test_signed_methods_are_declared_in_the_method_table():
    assert {name for name, method in METHODS.items() if method.signed} == {"ig", "attnlrp"}


def test_zero_levels_place_the_raw_zero_on_the_normalised_scale():
    maps = torch.tensor([[[-1.0, 3.0]], [[1.0, 3.0]], [[2.0, 2.0]]])  # mixed signs, one sign, constant
    assert zero_levels(maps).tolist() == [0.25, -0.5, 0.0]


def test_a_signed_explanation_carries_its_zero_and_keeps_its_map(tiny_folder, tmp_path):
    image = _image(tmp_path / "x.png")
    ig = IIAExplainer(tiny_folder("resnet"), method="ig", steps=4, device="cpu", progress=False)
    explanation = ig(image, target=1)
    pixel_values, _ = ig.preprocess(image)
    # the map is still min-max normalised (attribute() unchanged for its callers)
    assert np.abs(ig.attribute(pixel_values, target=1)[0].numpy() - explanation.heatmap).max() <= 1e-5
    assert explanation.heatmap.min() == 0 and explanation.heatmap.max() == 1
    # IG's raw map has both signs on a random image, so its zero lies strictly inside [0, 1]
    assert explanation.zero_level is not None and 0 < explanation.zero_level < 1
    iia = IIAExplainer(tiny_folder("resnet"), steps=1, device="cpu", progress=False)
    assert iia(image).zero_level is None


def test_a_signed_overlay_leaves_pixels_of_no_effect_untinted():
    """The min-max view of a signed map tints every pixel (zero sits at mid-scale); the signed view leaves a
    pixel where the raw map is 0 as the image, and tints positive and negative pixels in different hues."""
    image = Image.fromarray(np.full((4, 6, 3), 128, dtype=np.uint8))
    raw = np.zeros((4, 6), dtype=np.float32)
    raw[0, 0], raw[3, 5] = 2.0, -1.0
    heatmap = (raw - raw.min()) / (raw.max() - raw.min())
    zero = float(-raw.min() / (raw.max() - raw.min()))
    signed = np.asarray(signed_overlay(image, heatmap, zero)).astype(int)
    assert (signed[1:3] == 128).all()  # no effect: the image itself
    assert signed[0, 0, 0] > signed[0, 0, 2] and signed[3, 5, 2] > signed[3, 5, 0]  # red for, blue against
    assert (np.asarray(overlay(image, heatmap)).astype(int)[1:3] != 128).any()  # what min-max drawing did


@pytest.mark.parametrize("zero_level", [None, 0.4])
def test_the_annotated_overlay_is_a_readable_figure(zero_level):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    heatmap = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)
    heatmap[:2] = np.nan  # not seen by the model: left as the image
    figure = annotated_overlay(
        image, heatmap, "model · method\ntarget cat (class 0) · p = 0.500", zero_level=zero_level
    )
    assert figure.mode == "RGB" and figure.width >= 480  # a small image is enlarged so that the text is readable
    assert SIGNED_LEGEND != UNSIGNED_LEGEND and "min-max" in UNSIGNED_LEGEND and "signed" in SIGNED_LEGEND


def test_the_title_names_model_method_target_and_score(tiny_folder, tmp_path):
    explanation = IIAExplainer(tiny_folder("resnet"), steps=1, device="cpu", progress=False)(
        _image(tmp_path / "x.png"), target="bird"
    )
    title = _title(explanation, "some/folder/my-resnet", "iia", given=True)
    assert title.splitlines() == ["my-resnet · iia", f"target bird (class 2) · p = {explanation.score:.3f}"]
    assert "top-1" in _title(explanation, "my-resnet", "iia", given=False)
