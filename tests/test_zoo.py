"""The tiny-model zoo (hf_iia.testing): every image-classification type saves, loads back through the Auto
classes and classifies a PIL image from what its own processor returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from hf_iia import testing as zoo

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

BUILT = [t for t in zoo.IMAGE_CLASSIFICATION_TYPES if t not in zoo.SKIP_REASONS]


def _image() -> Image.Image:
    return Image.fromarray(np.random.RandomState(0).randint(0, 256, (45, 38, 3), dtype=np.uint8))


def _check(folder, model_type: str) -> None:
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    inputs = processor(_image(), return_tensors="pt")
    with torch.no_grad():
        logits = zoo.logits_of(model_type, model(**inputs))
    assert logits.shape == (1, len(zoo.LABELS))
    assert torch.isfinite(logits).all()
    assert model.config.id2label == zoo.LABELS


def test_types_come_from_the_auto_mapping():
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    )

    assert tuple(sorted(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)) == zoo.IMAGE_CLASSIFICATION_TYPES
    assert set(zoo.SKIP_REASONS) <= set(zoo.IMAGE_CLASSIFICATION_TYPES)
    assert set(zoo.TINY_OVERRIDES) <= set(zoo.IMAGE_CLASSIFICATION_TYPES)


@pytest.mark.parametrize("model_type", BUILT)
def test_type_saves_loads_and_classifies(model_type, tmp_path):
    folder = zoo.save_tiny(model_type, tmp_path / model_type)
    assert (folder / "model.safetensors").exists()
    _check(folder, model_type)


@pytest.mark.parametrize("name", zoo.TIMM_MODELS)
def test_timm_model_saves_loads_and_classifies(name, tmp_path):
    folder = zoo.save_tiny_timm(name, tmp_path / name)
    model = AutoModelForImageClassification.from_pretrained(folder)
    assert type(model).__name__ == "TimmWrapperForImageClassification"
    assert model.config.architecture == name
    _check(folder, "timm_wrapper")


def test_build_is_deterministic_and_in_eval_mode():
    a, _ = zoo.build_tiny("vit", seed=3)
    b, _ = zoo.build_tiny("vit", seed=3)
    assert not a.training
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_deit_is_the_distilled_model_the_tests_use():
    model, _processor = zoo.build_tiny("deit")
    assert type(model).__name__ == "DeiTForImageClassificationWithTeacher"
    assert model.config.image_size == 32 and model.config.num_hidden_layers == 2 and model.config.hidden_size == 16


@pytest.mark.parametrize("kind", list(zoo.TINY_KINDS))
def test_depth_width_defaults_are_the_table_and_deeper_models_build(kind):
    model_type = zoo.TINY_KINDS[kind]
    default, _ = zoo.build_tiny(model_type)
    same, _ = zoo.build_tiny(model_type, **zoo.depth_width(model_type))
    assert default.state_dict().keys() == same.state_dict().keys()
    assert all(
        torch.equal(p, q) for p, q in zip(default.state_dict().values(), same.state_dict().values(), strict=True)
    )
    if model_type == "timm_wrapper":
        assert zoo.depth_width(model_type, depth=3, width=32) == {}
        return
    deeper, _ = zoo.build_tiny(model_type, **zoo.depth_width(model_type, depth=3, width=32))
    config = deeper.config
    if model_type in ("vit", "deit"):
        assert config.num_hidden_layers == 3 and config.hidden_size == 32 and config.num_attention_heads == 4
    else:
        assert config.hidden_sizes == [8, 16, 24] and config.depths == [1, 1, 1]


def test_package_reexports_its_modules_and_stays_out_of_hf_iia():
    """Each module of the package (zoo, timm, plain, state, common) has its public names re-exported by
    ``hf_iia.testing``; importing it loads no test framework, and importing ``hf_iia`` does not load it."""
    import importlib
    import subprocess
    import sys

    for module in ("common", "plain", "state", "timm", "zoo"):
        part = importlib.import_module(f"hf_iia.testing.{module}")
        assert part.__doc__, module
        public = {name for name, value in vars(part).items() if getattr(value, "__module__", None) == part.__name__}
        public = {name for name in public if not name.startswith("_")}
        assert public <= set(zoo.__all__), (module, public - set(zoo.__all__))
    assert all(hasattr(zoo, name) for name in zoo.__all__)
    code = (
        "import sys, hf_iia; assert 'hf_iia.testing' not in sys.modules; import hf_iia.testing; "
        "print(sorted({'pytest', 'hypothesis'} & set(sys.modules)))"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["[]"]


def test_vit_by_hand_refuses_a_block_it_cannot_write_out():
    model, _ = zoo.build_tiny("vit")
    model.vit.layers[1] = torch.nn.Identity()
    with pytest.raises(TypeError, match="block 1 is a Identity, not a ViT or DeiT layer"):
        zoo.vit_logits_by_hand(model, zoo.pixels(1), {}, [])
