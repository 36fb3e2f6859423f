"""Safe to point at any checkpoint, and the CLI writes only where it is told.

- ``trust_remote_code`` is off unless passed: a checkpoint's own Python never runs.
- safetensors are preferred; a folder with only pickle weights is refused with
  ``UnsafeCheckpointError`` unless ``allow_pickle=True`` (and even then transformers
  unpickles tensors only, so a booby-trapped pickle is still refused).
- Missing, corrupt or unreachable checkpoints raise ``CheckpointError``.
- CLI outputs stay inside ``--out``: no ``..`` escapes, no writing through symlinks,
  no overwriting without ``--overwrite``, no partial output when refusing.

Every checkpoint is a real tiny model written with ``save_pretrained`` / ``torch.save``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from hf_iia import CheckpointError, IIAError, IIAExplainer, UnsafeCheckpointError
from hf_iia.outputs import OutputPathError, output_path, safe_name
from hf_iia.testing import build_tiny, save_tiny
from hf_iia.tools.cli import main


def _resnet(seed: int = 0) -> torch.nn.Module:
    """The zoo's tiny ResNet (2 stages, 4 labels), weights fixed by ``seed``."""
    model, _processor = build_tiny("resnet", seed=seed)
    return model


def _weights(seed: int) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in _resnet(seed).state_dict().items()}


def _same_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return all(torch.equal(state[name], tensor) for name, tensor in weights.items())


class _Trap:
    """Unpickling this runs ``open(marker, "w")``: proof that pickle code was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _pickle_only(folder: Path, seed: int = 1) -> Path:
    """A real ResNet checkpoint whose only weights file is a pickle ``pytorch_model.bin``."""
    model = _resnet(seed)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def _explain_cli(*args: str) -> int:
    return main(["explain", *args, "--steps", "1", "--device", "cpu"])


# ------------------------------------------------------------------ trust_remote_code
def _remote_code_checkpoint(folder: Path, marker: Path) -> Path:
    """A checkpoint whose config names its own Python classes (``auto_map``); importing them writes ``marker``."""
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "hf_iia_remote_test",
                "architectures": ["RemoteModel"],
                "auto_map": {
                    "AutoConfig": "remote_code.RemoteConfig",
                    "AutoModelForImageClassification": "remote_code.RemoteModel",
                },
            },
        )
    )
    (folder / "remote_code.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('remote code ran')\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class RemoteConfig(PretrainedConfig):\n    model_type = 'hf_iia_remote_test'\n"
        "class RemoteModel(PreTrainedModel):\n    config_class = RemoteConfig\n"
    )
    save_file({"weight": torch.zeros(1)}, folder / "model.safetensors")
    return folder


def test_remote_code_never_runs_unless_trusted(tmp_path, monkeypatch, capsys):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # keep ~/.cache untouched
    marker = tmp_path / "RAN"
    folder = _remote_code_checkpoint(tmp_path / "remote", marker)

    with pytest.raises(UnsafeCheckpointError, match="trust_remote_code"):
        IIAExplainer(str(folder), device="cpu")
    Image.new("RGB", (16, 12)).save(tmp_path / "x.png")  # a real image: the CLI checks images before the model
    assert _explain_cli(str(folder), str(tmp_path / "x.png"), "--out", str(tmp_path / "out")) == 2
    assert "trust_remote_code" in capsys.readouterr().err
    assert not marker.exists(), "the checkpoint's code ran without trust_remote_code=True"

    with pytest.raises(Exception):  # noqa: B017 - the toy remote model is incomplete; only its import matters
        IIAExplainer(str(folder), device="cpu", trust_remote_code=True)
    assert marker.exists(), "trust_remote_code=True did not reach transformers"


def test_remote_image_processor_code_never_runs(tmp_path):
    """A safetensors checkpoint whose preprocessor config points at its own code: the model loads, the code never runs."""
    folder = save_tiny("resnet", tmp_path / "ckpt")
    marker = tmp_path / "RAN"
    (folder / "remote_processor.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import ViTImageProcessor\nclass RemoteProcessor(ViTImageProcessor):\n    pass\n"
    )
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config.update(
        image_processor_type="RemoteProcessor", auto_map={"AutoImageProcessor": "remote_processor.RemoteProcessor"}
    )
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    explainer = IIAExplainer(str(folder), device="cpu", steps=1, progress=False)
    assert not marker.exists()
    assert type(explainer.processor).__module__.startswith("transformers.") or explainer.processor is None
    explainer.attribute(torch.zeros(1, 3, 32, 32))


# ------------------------------------------------------------------ safetensors first, pickle only on request
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_safetensors_are_preferred_over_pickle(tmp_path, allow_pickle):
    """Folder with model.safetensors (seed 0) and a booby-trapped pytorch_model.bin: the safetensors load, the pickle is never opened."""
    folder = save_tiny("resnet", tmp_path / "both", seed=0)
    marker = tmp_path / "PICKLE_RAN"
    with open(folder / "pytorch_model.bin", "wb") as stream:
        pickle.dump({"resnet.embedder.embedder.convolution.weight": _Trap(marker)}, stream)
    explainer = IIAExplainer(str(folder), device="cpu", allow_pickle=allow_pickle, progress=False)
    assert _same_weights(explainer.model, _weights(0))
    assert not marker.exists()


def test_pickle_only_checkpoint_is_refused_unless_allowed(tmp_path, capsys):
    folder = _pickle_only(tmp_path / "pickle", seed=1)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
        IIAExplainer(str(folder), device="cpu")
    Image.new("RGB", (16, 12)).save(tmp_path / "x.png")  # a real image: the CLI checks images before the model
    assert _explain_cli(str(folder), str(tmp_path / "x.png"), "--out", str(tmp_path / "out")) == 2
    assert "pickle" in capsys.readouterr().err and not (tmp_path / "out").exists()
    explainer = IIAExplainer(str(folder), device="cpu", allow_pickle=True, progress=False)
    assert _same_weights(explainer.model, _weights(1))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pth", "model.ckpt"])
def test_every_pickle_suffix_is_refused(tmp_path, name):
    folder = _pickle_only(tmp_path / "pickle")
    (folder / "pytorch_model.bin").rename(folder / name)
    with pytest.raises(UnsafeCheckpointError, match=name.replace(".", r"\.")):
        IIAExplainer(str(folder), device="cpu")


def test_booby_trapped_pickle_is_refused_even_when_allowed(tmp_path):
    folder = tmp_path / "trap"
    folder.mkdir()
    _resnet().config.save_pretrained(folder)
    marker = tmp_path / "PICKLE_RAN"
    with open(folder / "pytorch_model.bin", "wb") as stream:
        pickle.dump({"weight": _Trap(marker)}, stream)
    for allow_pickle in (False, True):
        with pytest.raises(UnsafeCheckpointError):
            IIAExplainer(str(folder), device="cpu", allow_pickle=allow_pickle)
        assert not marker.exists()


@pytest.mark.parametrize("case", ["config-only", "corrupt-safetensors", "missing-folder", "unknown-hub-id"])
def test_missing_or_corrupt_checkpoints_raise_checkpoint_error(tmp_path, monkeypatch, case):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder = tmp_path / "ckpt"
    if case in ("config-only", "corrupt-safetensors"):
        folder.mkdir()
        _resnet().config.save_pretrained(folder)
        if case == "corrupt-safetensors":
            (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    source = "hf-iia-tests/no-such-model" if case == "unknown-hub-id" else str(folder)
    with pytest.raises(CheckpointError) as caught:
        IIAExplainer(source, device="cpu")
    assert isinstance(caught.value, IIAError) and str(source) in str(caught.value)


# ------------------------------------------------------------------ CLI outputs confined to --out
@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    found = {}
    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        for name in ("photo.png", "..png", "weird name;rm -rf ~.png"):
            path = tmp_path / folder / name
            Image.fromarray(np.random.default_rng(seed).integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(path, "PNG")
            found[f"{folder}/{name}"] = path
    return found


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def test_cli_writes_only_inside_out(tmp_path, images, zoo_folder):
    before = _files(tmp_path)
    out = tmp_path / "nested" / "out"
    assert _explain_cli(str(zoo_folder("resnet")), *map(str, images.values()), "--out", str(out)) == 0
    created = _files(tmp_path) - before
    assert created and all(out in path.parents for path in created)
    # six inputs, three names twice: six distinct output pairs, nothing overwritten within the run
    assert len(created) == 2 * len(images)
    assert all(".." not in path.name for path in created)


def test_cli_never_overwrites_without_flag_and_writes_nothing_when_refusing(tmp_path, images, zoo_folder):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "photo_iia.png"
    existing.write_bytes(b"precious")
    args = [str(zoo_folder("resnet")), str(images["b/..png"]), str(images["a/photo.png"]), "--out", str(out)]
    assert _explain_cli(*args) == 2
    assert existing.read_bytes() == b"precious"
    assert _files(out) == {existing}, "a refused run left partial outputs"
    assert _explain_cli(*args, "--overwrite") == 0
    assert existing.read_bytes() != b"precious" and Image.open(existing).format == "PNG"  # the annotated figure


def test_cli_does_not_write_through_symlinks(tmp_path, images, zoo_folder):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "photo_iia.png").symlink_to(victim)
    for extra in ([], ["--overwrite"]):
        assert _explain_cli(str(zoo_folder("resnet")), str(images["a/photo.png"]), "--out", str(out), *extra) == 2
        assert victim.read_text() == "keep me"


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.text(st.characters(exclude_characters="\x00"), max_size=40)
    | st.sampled_from(["..", "../x", "../../etc/passwd", "/etc/passwd", "a/../../b", "./../x", "~", ".", ""])
)
def test_output_names_cannot_escape(tmp_path, name):
    root = tmp_path / "out"
    stem = safe_name(name)
    assert stem and "/" not in stem and os.sep not in stem and ".." not in stem
    assert output_path(root, f"{stem}_iia.png", overwrite=True).parent == root.resolve()
    try:
        target = output_path(root, name, overwrite=True)
    except OutputPathError:
        return
    assert root.resolve() in target.parents
