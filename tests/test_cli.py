"""The hf-iia command line, run in-process through its main() (and in fresh interpreters for import costs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hf_iia.methods import METHODS
from hf_iia.tools.cli import build_parser, main
from hf_iia.tools.demo import SAMPLE_NAMES

HEAVY = ("torch", "transformers", "datasets", "accelerate")


def _fresh(code: str) -> str:
    """stdout of ``code`` run in a new interpreter (this one has imported everything already)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout


def test_help_imports_no_heavy_package():
    code = (
        "import sys; from hf_iia.tools.cli import build_parser; build_parser().format_help(); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert _fresh(code).strip() == "[]"


def test_importing_the_package_imports_no_transformers():
    _fresh("import hf_iia, sys; assert 'transformers' not in sys.modules")


def _subcommands() -> dict:
    parser = build_parser()
    return next(action.choices for action in parser._actions if isinstance(action.choices, dict))


def test_help_lists_exactly_the_library_methods():
    from hf_iia.methods import available_methods
    from hf_iia.tools.cli import METHOD_NAMES

    text = " ".join(_subcommands()["explain"].format_help().split())  # argparse wraps lines
    names = re.search(r"attribution method: (.*?) \(default: iia\)", text).group(1).split(", ")
    assert names == list(METHODS) == list(available_methods()) == list(METHOD_NAMES)


def test_module_help_imports_no_torch():
    """``python -m hf_iia.tools.cli --help`` (and each subcommand's) prints help without importing torch."""
    code = (
        "import runpy, sys\n"
        "for argv in (['--help'], ['explain', '--help'], ['audit', '--help'], ['bench', '--help']):\n"
        "    sys.argv = ['hf-iia', *argv]\n"
        "    try:\n"
        "        runpy.run_module('hf_iia.tools.cli', run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        f"print('\\nheavy:', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    output = _fresh(code)
    assert "attribution method" in output and "bench methods" in output
    assert output.splitlines()[-1] == "heavy: []"


def test_cli_choices_are_the_library_tables():
    from hf_iia.adapters.cnn import CNN
    from hf_iia.adapters.vit import VIT
    from hf_iia.fusions import LEVEL_FUSIONS
    from hf_iia.presets import STARTS

    choices = {action.dest: action.choices for action in _subcommands()["explain"]._actions if action.choices}
    assert set(choices["combine"]) == set(LEVEL_FUSIONS) and set(choices["start"]) == set(STARTS)
    assert set(choices["preset"]) == {*CNN.presets, *VIT.presets}
    library = {"preset": {*CNN.presets, *VIT.presets}, "combine": set(LEVEL_FUSIONS), "start": set(STARTS)}
    checked = set()
    for name, command in _subcommands().items():  # every subcommand's copy, not only explain's
        for action in command._actions:
            if action.dest in library and action.choices:
                assert set(action.choices) == library[action.dest], (name, action.dest)
                checked.add((name, action.dest))
    assert {("audit", "preset"), ("explain", "combine"), ("layers", "preset")} <= checked


def test_bench_help_lists_exactly_the_bench_columns():
    """``bench --methods``'s help is a torch-free copy of the bench's columns, which read the method registry."""
    from hf_iia.methods import available_methods
    from hf_iia.tools.bench.run import METHOD_SPECS
    from hf_iia.tools.cli import BENCH_METHOD_KEYS

    assert list(BENCH_METHOD_KEYS) == list(METHOD_SPECS)
    assert {spec.method for spec in METHOD_SPECS.values()} == set(available_methods())
    text = " ".join(_subcommands()["bench"].format_help().split())
    assert f"each model): {' '.join(BENCH_METHOD_KEYS)}" in text


def test_iia3_with_a_fused_map_and_a_black_start_from_the_command_line(tiny_folder, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    argv = ["explain", str(tiny_folder("resnet")), str(image), "--out", str(tmp_path / "out")]
    assert main([*argv, "--preset", "iia3", "--combine", "product", "--start", "black", "--steps", "1"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert np.load(record["map"]).shape == (32, 32)


def test_cli_knows_the_audits_built_in_datasets():
    from hf_iia.tools.audit import SYNTHETIC_DATASETS
    from hf_iia.tools.cli import SYNTHETIC_DATASET_NAMES

    assert set(SYNTHETIC_DATASET_NAMES) == set(SYNTHETIC_DATASETS)


def test_help_texts_are_plain_text():
    parser = build_parser()
    for text in [parser.format_help(), *(sub.format_help() for sub in _subcommands().values())]:
        assert "``" not in text


def test_unknown_method_is_a_command_line_error(tiny_folder, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    assert main(["explain", str(tiny_folder("resnet")), str(image), "--out", str(tmp_path), "--method", "nope"]) == 2
    assert "hf-iia: error: unknown method 'nope'" in capsys.readouterr().err


def test_explain_writes_overlays_and_maps(tiny_folder, tmp_path, capsys):
    images = []
    for i in range(2):
        path = tmp_path / f"photo {i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    out = tmp_path / "out"
    assert (
        main(["explain", str(tiny_folder("resnet")), *images, "--out", str(out), "--target", "dog", "--steps", "2"])
        == 0
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in records] == ["dog", "dog"]
    assert [r["image"] for r in records] == images
    heatmap = np.load(records[0]["map"])
    assert heatmap.shape == (32, 32) and heatmap.min() >= 0 and heatmap.max() <= 1
    assert records[1]["overlay"].endswith("_iia_dog.png")  # the target is in the name
    figure = Image.open(records[1]["overlay"])  # the overlay as a figure with a title and a colour bar
    assert figure.width > 50 and figure.height > 40
    argv = ["explain", str(tiny_folder("resnet")), images[0], "--out", str(out), "--target", "dog"]
    assert main(argv) == 2  # no silent overwrite
    assert "exists" in capsys.readouterr().err


def test_inputs_whose_names_sanitise_alike_get_their_own_outputs(tiny_folder, tmp_path, capsys):
    """'a b.png' and 'a_b.png' both sanitise to 'a_b': each output must still hold its own input's map."""
    images = []
    for i, name in enumerate(["a b.png", "a_b.png"]):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name)
        images.append(str(tmp_path / name))
    out = tmp_path / "out"
    assert main(["explain", str(tiny_folder("resnet")), *images, "--out", str(out), "--steps", "2"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len({r["map"] for r in records}) == 2
    for record in records:
        alone = tmp_path / "alone" / Path(record["image"]).name
        assert (
            main(
                [
                    "explain",
                    str(tiny_folder("resnet")),
                    record["image"],
                    "--out",
                    str(alone.parent / alone.stem),
                    "--steps",
                    "2",
                ]
            )
            == 0
        )
        (single,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        # the same map alone as in a batch of two, within the batch-composition invariant's 1e-5
        assert np.abs(np.load(record["map"]) - np.load(single["map"])).max() <= 1e-5


def _exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit code, argparse's usage errors (``SystemExit``) included."""
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code or 0)


def test_mistakes_fail_fast_with_a_message(tiny_folder, tmp_path, capsys):
    """Each mistake ends in 'hf-iia: error:' (argparse: 'hf-iia explain: error:') with exit code 2, in under 2 s, before any model is loaded or any
    map computed (and so before any network retry)."""
    (tmp_path / "taken").write_text("a file")
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "chelsea_iia.png").write_bytes(b"an earlier run")
    model = str(tiny_folder("resnet"))
    out = ["--out", str(tmp_path / "out")]
    cases = [
        (["explain", str(tmp_path / "my_model"), str(image)], "does not exist"),
        (["explain", "my_model", str(image)], "HF_HUB_OFFLINE"),
        (["explain", str(tmp_path), str(image), "--out", str(tmp_path / "taken")], "not a folder"),
        (["explain", model, str(image), "--steps", "-3", *out], "argument --steps: must be at least 0, got -3"),
        (["explain", model, str(image), "--steps", "x", *out], "argument --steps: expected an integer"),
        (["explain", model, str(image), "--internal-batch-size", "0", *out], "must be at least 1"),
        (["explain", model, str(image), "--device", "cuda:99", *out], "cuda"),
        (["explain", model, str(image), "--device", "gpu", *out], "is not a torch device"),
        (["explain", model, str(tmp_path / "no.png"), *out], "image file"),
        (["explain", model, str(tmp_path), *out], "is a folder, not an image file"),
        (["explain", model, str(image), "--target", "5", *out], "target 5 is out of range"),
        (["explain", model, str(image), "--target", "zebra", *out], "unknown label 'zebra'"),
        (["explain", model, str(image), "--layer", "a b", *out], "neither an index"),
        (["explain", str(demo), str(image), *out], "has no config.json"),
        (["layers", str(tmp_path / "nothing")], "does not exist"),
        (["layers", model, "--target", "1"], "unrecognized arguments: --target"),
        (["demo", "--out", str(demo)], "exists"),
        (["audit", model, "--dataset", "nosuchdataset", *out], "HF_HUB_OFFLINE"),
        (["audit", model, "--dataset", str(tmp_path / "no_such_folder"), *out], "does not exist"),
        (["audit", model, "--dataset", "synthetic", "--steps", "-1", *out], "must be at least 0"),
    ]
    for argv, message in cases:
        started = time.perf_counter()
        assert _exit_code(argv) == 2, argv
        err = capsys.readouterr().err
        assert re.search(r"hf-iia( \w+)?: error:", err) and message in err, (argv, err)
        assert time.perf_counter() - started < 2.0, argv
    assert not (tmp_path / "out").exists()
    assert (demo / "chelsea_iia.png").read_bytes() == b"an earlier run"


def test_a_250_character_file_name_gets_outputs_the_file_system_takes(tiny_folder, tmp_path, capsys):
    image = tmp_path / ("x" * 246 + ".png")
    Image.new("RGB", (32, 32)).save(image)
    assert (
        main(["explain", str(tiny_folder("resnet")), str(image), "--out", str(tmp_path / "out"), "--steps", "1"]) == 0
    )
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["image"] == str(image) and Path(record["map"]).exists() and len(Path(record["map"]).name) < 200


def test_zero_steps_is_legal_and_says_what_it_means(tiny_folder, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    argv = ["explain", str(tiny_folder("resnet")), str(image), "--steps", "0", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert (
        "--steps 0 leaves that path without an integral: only its point a = 1 is evaluated" in capsys.readouterr().err
    )


def test_demo_runs_offline(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = {json.loads(line)["image"]: json.loads(line) for line in lines if line.startswith("{")}
    assert list(records) == list(SAMPLE_NAMES)  # the names the CLI checks outputs for before loading the photos
    assert "tabby" in records["chelsea"]["label"] and records["coffee"]["label"] == "espresso"
    grid = Image.open(tmp_path / "demo_grid.png")
    assert grid.width >= 1000
