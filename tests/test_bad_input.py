"""Bad input, property-based: every case returns a valid map (finite, in [0, 1]) or raises a documented IIAError.

Images of any PIL mode and size (1x1 up to 8000x8000; big ones written lazily as PNG
files row by row, never held as arrays by the test), arrays of any dtype and range,
NaN/inf arrays and tensors, empty batches, mismatched targets, label names in any case,
and real classifiers whose logits or gradients are not finite.
"""

from __future__ import annotations

import functools
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from hf_iia import IIAError, IIAExplainer, ImageInputError, NumericalError, TargetError
from hf_iia.explainer import normalise
from hf_iia.testing import LABELS, ConstantLogits, NaNLogits, SmallCNN, pixels

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None
)


KINDS = ("vit", "deit", "resnet", "convnext")
"""The Hugging Face families checked here: the zoo's default models (``conftest.zoo_explainer``), 4 labels."""
SIZE = 32
"""Their input side (pixels): every map is ``SIZE x SIZE``."""


@pytest.fixture(scope="module")
def one_step(zoo_explainer):
    """``kind -> IIAExplainer`` (one step, CPU), one explainer per kind for the whole module."""
    return functools.cache(lambda kind: zoo_explainer(kind, steps=1))


def _assert_valid_maps(result) -> None:
    explanations = result if isinstance(result, list) else [result]
    for explanation in explanations:
        heatmap = explanation.heatmap
        assert heatmap.dtype == np.float32 and heatmap.shape == (SIZE, SIZE)
        assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1


def _outcome(call, allowed=(ImageInputError,)):
    """Run ``call``: a valid map -> ``None``; a documented error with a clear message -> the error; anything else fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant maps: documented, zeros with a warning
        try:
            result = call()
        except allowed as error:
            event(type(error).__name__)
            assert isinstance(error, IIAError)
            assert len(str(error)) > 20, f"unclear message: {error!r}"
            return error
    _assert_valid_maps(result)
    event("map")
    return None


# ------------------------------------------------------------------ PIL images: every mode, odd sizes
MODES = [
    "1",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "RGB",
    "RGBA",
    "RGBa",
    "RGBX",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I;16",
    "I;16B",
    "I",
    "F",
]


def _pil_image(mode: str, width: int, height: int, seed: int, scale: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I;16B"):
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16)).convert(mode)
    if mode == "I":
        return Image.fromarray((rng.integers(-1000, 70000, (height, width)) * scale).astype(np.int32))
    if mode == "F":  # PIL "F" images are often 0..255, which the package refuses (floats must be in [0, 1])
        return Image.fromarray((rng.random((height, width)) * scale).astype(np.float32))
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode in ("La", "PA"):
        return rgb.convert("LA" if mode == "La" else "RGBA").convert(mode)
    return rgb.convert(mode)


@SETTINGS
@given(
    kind=st.sampled_from(KINDS),
    mode=st.sampled_from(MODES),
    width=st.integers(1, 64),
    height=st.integers(1, 64),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.0, 0.001, 1.0, 255.0]),
)
@example(kind="resnet", mode="La", width=3, height=2, seed=0, scale=1.0)
@example(kind="resnet", mode="F", width=5, height=4, seed=0, scale=255.0)  # refused: floats must be in [0, 1]
@example(kind="resnet", mode="I", width=5, height=4, seed=0, scale=1.0)  # refused: negative / > 65535
@example(kind="vit", mode="1", width=1, height=1, seed=0, scale=1.0)
@example(kind="convnext", mode="CMYK", width=1, height=64, seed=0, scale=1.0)
def test_pil_images_of_any_mode_and_size(kind, mode, width, height, seed, scale, one_step):
    image = _pil_image(mode, width, height, seed, scale)
    error = _outcome(lambda: one_step(kind)(image))
    if mode not in ("I", "F"):  # 8-bit and 16-bit modes always have a valid RGB view
        assert error is None, f"mode {mode} refused: {error}"
    elif error is not None:
        assert "must lie in" in str(error)


# ------------------------------------------------------------------ numpy arrays: every dtype and range
DTYPES = [np.uint8, np.uint16, np.int8, np.int64, np.float16, np.float32, np.float64, np.bool_]


def _array_ok(array: np.ndarray) -> bool:
    """The documented contract of ``to_rgb`` for arrays."""
    if array.dtype in (np.uint8, np.bool_, np.uint16):
        return True
    if np.issubdtype(array.dtype, np.integer):
        return bool(array.min() >= 0 and array.max() <= 65535)
    return bool(np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1)


@st.composite
def image_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    shape = draw(st.sampled_from([(height, width), (height, width, 1), (height, width, 3), (height, width, 4)]))
    if dtype.kind == "f":
        in_range = draw(st.booleans())
        elements = (
            st.floats(0, 1, width=dtype.itemsize * 8)
            if in_range
            else st.floats(allow_nan=True, allow_infinity=True, width=dtype.itemsize * 8)
        )
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    return draw(arrays(dtype, shape, elements=elements, fill=elements))


@SETTINGS
@given(kind=st.sampled_from(["resnet", "vit"]), array=image_arrays())
@example(kind="resnet", array=np.full((4, 4), -3, dtype=np.int64))
@example(kind="resnet", array=np.full((4, 4, 3), 2.0, dtype=np.float32))
@example(kind="vit", array=np.full((4, 4, 3), np.nan, dtype=np.float32))
@example(kind="vit", array=np.full((5, 3), np.inf, dtype=np.float64))
@example(kind="resnet", array=np.ones((1, 1), dtype=np.bool_))
@example(kind="resnet", array=np.full((3, 3, 3), 65535, dtype=np.uint16))
def test_arrays_of_any_dtype_and_range(kind, array, one_step):
    error = _outcome(lambda: one_step(kind)(array))
    assert (error is None) == _array_ok(array), f"{array.dtype} [{np.nanmin(array)}, {np.nanmax(array)}]: {error}"


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((4, 4, 3), np.complex64),
        np.zeros((4, 4, 3), object),
        np.zeros((2, 2, 2, 3), np.uint8),
        np.zeros(5, np.uint8),
    ],
    ids=["2-channels", "empty", "complex", "object", "4-d", "1-d"],
)
def test_unusable_arrays_raise_image_input_error(array, one_step):
    with pytest.raises(ImageInputError):
        one_step("resnet")(array)


@pytest.mark.parametrize("thing", [None, 3, "no/such/file.png", b"bytes", {"pixel_values": 1}, [[np.zeros((4, 4))]]])
def test_unusable_objects_raise_image_input_error(thing, one_step):
    with pytest.raises(ImageInputError):
        one_step("resnet")(thing)


# ------------------------------------------------------------------ files: huge, extreme aspect, bombs, truncated
def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png(path: Path, width: int, height: int, *, truncate: bool = False, header_only: bool = False) -> Path:
    """A grayscale PNG with a diagonal gradient, compressed row by row: no ``height x width`` array is ever built."""
    with open(path, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        if header_only:
            return path
        compressor, pieces = zlib.compressobj(1), []
        base = np.arange(width, dtype=np.int64)
        for y in range(height):
            row = ((base + y) * 255 // max(width + height - 2, 1)).astype(np.uint8).tobytes()
            pieces.append(compressor.compress(b"\x00" + row))
        data = b"".join(pieces) + compressor.flush()
        stream.write(_chunk(b"IDAT", data[: len(data) // 2] if truncate else data))
        if not truncate:
            stream.write(_chunk(b"IEND", b""))
    return path


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(long_side=st.integers(1, 8000), short_side=st.integers(1, 64), wide=st.booleans())
@example(long_side=8000, short_side=1, wide=True)
@example(long_side=8000, short_side=1, wide=False)
def test_image_files_of_extreme_aspect_ratio(tmp_path_factory, long_side, short_side, wide, one_step):
    width, height = (long_side, short_side) if wide else (short_side, long_side)
    path = write_png(tmp_path_factory.mktemp("png") / "extreme.png", width, height)
    explanation = one_step("convnext")(str(path))
    _assert_valid_maps(explanation)
    on_image = explanation.heatmap_on_image()
    assert on_image.shape == (height, width)
    seen = on_image[np.isfinite(on_image)]
    assert seen.size and seen.min() >= 0 and seen.max() <= 1


def test_an_8000_by_8000_image_file(tmp_path, capsys, one_step):
    """The largest size promised: explained from its path; geometry probed at reduced size (not 3 x 8k x 8k probes)."""
    path = write_png(tmp_path / "huge.png", 8000, 8000)
    process = psutil.Process()
    start, rss = time.perf_counter(), process.memory_info().rss
    explanation = one_step("resnet")(str(path))
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\n[8000x8000 PNG] {seconds:.1f} s, file {path.stat().st_size / 2**10:.0f} KiB, "
            f"RSS now +{(process.memory_info().rss - rss) / 2**20:.0f} MiB"
        )
    _assert_valid_maps(explanation)
    assert explanation.image.size == (8000, 8000)
    assert explanation.geometry is not None and explanation.geometry.original_size == (8000, 8000)
    assert abs(explanation.geometry.scale_x - 8000 / SIZE) < 0.02 * 8000 / SIZE


def test_decompression_bomb_is_refused(tmp_path, one_step):
    path = write_png(tmp_path / "bomb.png", 60000, 60000, header_only=True)
    with pytest.raises(ImageInputError, match="too large|cannot read"):
        one_step("resnet")(str(path))


@pytest.mark.parametrize("content", ["truncated", "not-an-image", "empty"])
def test_unreadable_files_raise_image_input_error(tmp_path, content, one_step):
    path = tmp_path / "bad.png"
    if content == "truncated":
        write_png(path, 300, 200, truncate=True)
    else:
        path.write_bytes(b"hello, world" if content == "not-an-image" else b"")
    with pytest.raises(ImageInputError, match="bad.png"):
        one_step("resnet")(str(path))


# ------------------------------------------------------------------ pixel_values tensors
@settings(SETTINGS, max_examples=50)
@given(
    kind=st.sampled_from(KINDS),
    batch=st.integers(0, 3),
    channels=st.sampled_from([3, 3, 3, 1, 2, 4]),
    height=st.sampled_from([SIZE, SIZE, SIZE, 1, 2, 7, 8, 17, 40]),
    width=st.sampled_from([SIZE, SIZE, SIZE, 1, 3, 8, 23]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    poison=st.sampled_from([None, None, None, float("nan"), float("inf"), -float("inf"), 1e30]),
    seed=st.integers(0, 100),
)
@example(kind="vit", batch=1, channels=3, height=SIZE, width=SIZE, dtype=torch.float32, poison=float("nan"), seed=0)
@example(kind="resnet", batch=2, channels=3, height=1, width=1, dtype=torch.float32, poison=None, seed=0)
def test_pixel_value_tensors(kind, batch, channels, height, width, dtype, poison, seed, one_step):
    x = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed)).to(dtype)
    if poison is not None and x.numel():
        x.view(-1)[seed % x.numel()] = poison
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            maps = one_step(kind).attribute(x)
        except (ImageInputError, NumericalError) as error:
            event(type(error).__name__)
            assert len(str(error)) > 20
            if poison is not None and poison != 1e30 and x.numel():
                assert isinstance(error, ImageInputError)  # NaN/inf input: refused (or its shape was)
            return
    event("map")
    assert poison is None or poison == 1e30 or not x.numel(), "NaN/inf input gave a map"
    assert maps.shape == (batch, height, width) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and (maps >= 0).all() and (maps <= 1).all()


def test_integer_and_non_tensor_pixel_values(one_step):
    with pytest.raises(ImageInputError, match="floating point"):
        one_step("resnet").attribute(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.int64))
    with pytest.raises(ImageInputError, match="torch.Tensor"):
        one_step("resnet").attribute(np.zeros((1, 3, SIZE, SIZE), np.float32))


# ------------------------------------------------------------------ empty batches
@pytest.mark.parametrize("kind", KINDS)
def test_empty_batches(kind, one_step):
    ex = one_step(kind)
    assert ex([]) == []
    assert ex([], target=[]) == []
    assert ex(torch.empty(0, 3, SIZE, SIZE)) == []
    assert ex.attribute(torch.empty(0, 3, SIZE, SIZE)).shape == (0, SIZE, SIZE)
    with pytest.raises(TargetError):
        ex([], target=[1])


# ------------------------------------------------------------------ targets
@SETTINGS
@given(batch=st.integers(1, 3), targets=st.lists(st.integers(0, len(LABELS) - 1), max_size=5))
def test_mismatched_target_lists_raise_target_error(batch, targets, one_step):
    assume(len(targets) not in (batch,))
    images = [np.full((6, 6, 3), 40 * i, np.uint8) for i in range(batch)]
    with pytest.raises(TargetError, match="targets for"):
        one_step("resnet")(images, target=targets)
    with pytest.raises(TargetError, match="targets for"):
        one_step("resnet").attribute(pixels(batch), target=torch.tensor(targets, dtype=torch.int64))


@SETTINGS
@given(
    index=st.sampled_from(sorted(LABELS)),
    flips=st.lists(st.booleans(), min_size=20, max_size=20),
    kind=st.sampled_from(["resnet", "deit"]),
)
def test_label_names_in_any_case_resolve(index, flips, kind, one_step):
    name = LABELS[index]
    mixed = "".join(
        c.upper() if flip else c.lower()
        for c, flip in zip(name, (flips + [False] * len(name))[: len(name)], strict=True)
    )
    explanation = one_step(kind)(np.zeros((5, 5, 3), np.uint8), target=mixed)
    assert explanation.target == index and explanation.label == name
    _assert_valid_maps(explanation)


@SETTINGS
@given(
    target=st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=len(LABELS)),
        st.floats(),
        st.booleans(),
        st.text(alphabet="xyzqjk0123 ", min_size=1, max_size=12),
        st.just(""),
        st.dictionaries(st.text(), st.integers()),
    )
)
def test_bad_targets_raise_target_error(target, one_step):
    with pytest.raises(TargetError):
        one_step("resnet")(np.zeros((5, 5, 3), np.uint8), target=target)


def test_out_of_range_target_on_a_plain_module_is_found_from_the_logits():
    ex = IIAExplainer(SmallCNN(classes=3), layer="features", steps=1, progress=False)
    with pytest.raises(TargetError, match="out of range"):
        ex.attribute(pixels(1), target=3)


# ------------------------------------------------------------------ non-finite models and constant integrands
def test_nan_logits_raise_numerical_error():
    """A real nn.Module classifier whose logits are NaN, explained at layer=: NumericalError, never a NaN map."""
    ex = IIAExplainer(NaNLogits(), layer="features", steps=2, progress=False)
    with pytest.raises(NumericalError, match="non-finite logits"):
        ex.attribute(pixels(2))


class _NaNGradient(SmallCNN):
    """Finite logits, but d sqrt(f^2)/df = f/|f| is 0/0 where the feature map is zero: without biases, at the
    baseline image (a0 = 0), which the engine computes (a level's own zero, a = 0, is left out)."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            for layer in self.features:
                if isinstance(layer, torch.nn.Conv2d):
                    layer.bias.zero_()

    def forward(self, pixel_values):
        features = self.features(pixel_values)
        return self.classifier((features * features).sqrt().mean(dim=(2, 3)))


def test_nan_gradients_raise_numerical_error():
    ex = IIAExplainer(_NaNGradient(), layer="features", steps=2, progress=False)
    with pytest.raises(NumericalError, match="not finite"):
        ex.attribute(pixels(2))


def test_constant_integrand_gives_zero_maps_with_a_warning():
    """Zero classifier weights: dy/dA = 0 everywhere, so the integrand is all zero -> zeros + RuntimeWarning, no NaN."""
    ex = IIAExplainer(ConstantLogits(), layer="features", steps=2, progress=False)
    with pytest.warns(RuntimeWarning, match="constant"):
        maps = ex.attribute(pixels(2))
    assert torch.equal(maps, torch.zeros_like(maps))


@SETTINGS
@given(
    maps=arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=32),
    )
)
def test_normalise_never_returns_nan(maps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = normalise(torch.from_numpy(maps))
    assert torch.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()
