"""Trust at the edges: images in as viewers show them, overlays out only where the geometry is established.

* EXIF orientation: a phone photo (JPEG with an ``Orientation`` tag) is explained upright on every path (a file path,
  a PIL image, a ``datasets`` row), and all of them agree.
* The processor's geometry (``imaging.probe_geometry``) is checked against ground truth for the image processor of
  every type of the tiny zoo: a marker painted at a known original pixel is found in ``pixel_values`` and mapped back.
  When no geometry can be established the overlay is drawn on the model input, with a note, never stretched.
* ``start="black"`` is exactly what the processor makes of a black image (rescale offsets, channel flips included).
"""

from __future__ import annotations

import warnings

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_iia import GeometryError, IIAError, IIAExplainer, explain_dataset
from hf_iia import testing as zoo
from hf_iia.imaging import ORIENTATION, Geometry, probe_geometry, process, to_rgb

STORED = (48, 30)  # (W, H) of the pixels as stored in the file: landscape, so a sideways decode changes the shape
TURNS = {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}  # what a viewer does for each tag


def _photo(path, orientation: int) -> Image.Image:
    """Write a JPEG whose stored pixels are ``STORED`` with a red block at the stored top-left and EXIF
    ``orientation``; return the stored pixels as decoded (JPEG is lossy: compare with the decode, not the array)."""
    rng = np.random.RandomState(orientation)
    pixels = rng.randint(0, 120, (STORED[1], STORED[0], 3), dtype=np.uint8)
    pixels[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as opened:
        return opened.convert("RGB")  # stored order: PIL does not apply the tag by itself


@pytest.mark.parametrize("orientation", sorted(TURNS))
def test_exif_orientation_is_applied_to_paths_and_pil_images(orientation, tmp_path):
    path = tmp_path / f"phone_{orientation}.jpg"
    stored = _photo(path, orientation)
    upright = stored.transpose(TURNS[orientation])
    for image in (to_rgb(path), to_rgb(str(path)), to_rgb(Image.open(path))):
        assert image.size == (STORED[1], STORED[0])  # portrait, as viewers show it
        assert np.array_equal(np.asarray(image), np.asarray(upright))
    # Where the stored top-left red block goes: 6 turns the photo clockwise (top-left -> top-right), 8 anticlockwise.
    corner = np.asarray(to_rgb(path))[:6, -6:] if orientation == 6 else np.asarray(to_rgb(path))[-6:, :6]
    assert corner[..., 0].min() > 200 and corner[..., 1:].max() < 60
    # An image already turned (datasets does it on decode) has its tag removed: it is not turned twice.
    assert np.array_equal(np.asarray(to_rgb(to_rgb(Image.open(path)))), np.asarray(upright))


@pytest.mark.parametrize("orientation", sorted(TURNS))
def test_phone_photo_is_explained_upright_by_path_pil_and_dataset(orientation, tiny_folder, tmp_path):
    path = tmp_path / f"phone_{orientation}.jpg"
    upright = Image.fromarray(np.asarray(_photo(path, orientation).transpose(TURNS[orientation])))  # no EXIF left
    explainer = IIAExplainer(tiny_folder("resnet"), device="cpu", steps=2, progress=False)
    from_path = explainer(str(path), target=0)
    from_upright = explainer(upright, target=0)
    assert from_path.image is not None and from_path.image.size == upright.size
    assert torch.equal(from_path.pixel_values, from_upright.pixel_values)  # the model sees the upright photo
    # datasets decodes upright itself; explain_dataset (which decodes the file bytes here) must agree with the path.
    rows = datasets.Dataset.from_dict({"image": [str(path)]}).cast_column("image", datasets.Image())
    assert torch.equal(explainer(rows[0]["image"], target=0).pixel_values, from_path.pixel_values)
    out = explain_dataset(explainer, rows, target_column=None, batch_size=1)
    stored_map = np.asarray(out.with_format("numpy")["heatmap"])[0]
    # float16 storage (error < 2.5e-4) and float32 noise; a sideways input gives a different map altogether.
    np.testing.assert_allclose(stored_map, from_path.heatmap, atol=2e-3, rtol=0)


# ----------------------------------------------------------------------------------------- geometry
TYPES = [t for t in zoo.IMAGE_CLASSIFICATION_TYPES if t not in zoo.SKIP_REASONS and t != "timm_wrapper"]
NO_PIXEL_GRID = {"siglip2": "pixel_values are patch sequences [B, patches, dim], not an image"}
SIZES = [(50, 37), (37, 50), (90, 300), (20, 15)]  # landscape, portrait, a long side cropped, upscaled


def _processor(kind: str):
    if kind in zoo.TIMM_MODELS:
        return zoo.build_tiny_timm(kind)[1]
    return zoo.tiny_processor(kind, zoo.tiny_config(kind)[1])


def _pixel_values(processor):
    return lambda images: process(processor, images)


def _marker_errors(preprocess, geometry: Geometry, size: tuple[int, int]) -> list[float]:
    """Ground truth: paint a white square on grey at a known original pixel, locate it in ``pixel_values`` (the
    centroid of the change, all channels) and map it back with ``geometry``; the errors in original pixels.

    The markers are placed at 30 %, 50 % and 70 % of the model input (through ``geometry``), so they lie inside what
    the processor keeps; a wrong geometry then places or maps them wrongly, which the centroid shows.
    """
    width, height = size
    grey = np.full((height, width, 3), 128, dtype=np.uint8)
    plain = preprocess([Image.fromarray(grey)])[0].double()
    h, w = plain.shape[1:]
    radius = max(1, int(max(geometry.scale_x, geometry.scale_y)))  # a marker of about one model-input pixel or more
    ys, xs = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(), indexing="ij")
    errors = []
    for fraction in (0.3, 0.5, 0.7):
        u = int(round(geometry.scale_x * fraction * (w - 1) + geometry.shift_x))
        v = int(round(geometry.scale_y * fraction * (h - 1) + geometry.shift_y))
        u, v = min(max(u, radius), width - 1 - radius), min(max(v, radius), height - 1 - radius)
        marked = grey.copy()
        marked[v - radius : v + radius + 1, u - radius : u + radius + 1] = 255
        change = (preprocess([Image.fromarray(marked)])[0].double() - plain).abs().sum(dim=0)
        assert change.sum() > 0, f"the marker at {(u, v)} is not in the model input"
        x, y = (change * xs).sum() / change.sum(), (change * ys).sum() / change.sum()
        errors += [abs(geometry.scale_x * float(x) + geometry.shift_x - u)]
        errors += [abs(geometry.scale_y * float(y) + geometry.shift_y - v)]
    return errors


@pytest.mark.parametrize("kind", TYPES + [next(iter(zoo.TIMM_MODELS))])
def test_probed_geometry_matches_a_marker_for_every_zoo_processor(kind):
    """MobileViT and PP-LCNet flip RGB -> BGR, Donut pads, TextNet stretches its axes differently, PP-LCNet and the
    shortest-edge processors crop: the geometry is found for each, and maps a marker back within a pixel."""
    processor = _processor(kind)
    preprocess = _pixel_values(processor)
    for size in SIZES:
        geometry = probe_geometry(preprocess, size)
        if kind in NO_PIXEL_GRID:
            assert geometry is None
            continue
        assert geometry is not None, f"{kind} at {size}: no geometry"
        errors = _marker_errors(preprocess, geometry, size)
        assert max(errors) <= 1.0, f"{kind} at {size}: marker mapped back {max(errors):.2f} px off ({geometry})"


def test_a_large_image_is_not_given_the_geometry_of_its_reduced_probe_when_the_processor_differs():
    """Over PROBE_MAX_SIDE ** 2 pixels the probe runs at a reduced size; a processor that crops fixed pixels (no
    resize) maps the reduced image differently, and the full-size confirmation refuses the scaled-back fit."""
    from transformers import CLIPImageProcessor

    crop = CLIPImageProcessor(do_resize=False, do_center_crop=True, crop_size={"height": 64, "width": 64})
    assert probe_geometry(_pixel_values(crop), (1500, 1500)) is None  # scaled back: 94 px seen, but 64 are
    resize = zoo.tiny_processor("vit", 32)  # a plain resize is the same map at every size: confirmed
    geometry = probe_geometry(_pixel_values(resize), (1500, 1100))
    assert geometry is not None and max(_marker_errors(_pixel_values(resize), geometry, (1500, 1100))) <= 1.0


def test_a_processor_that_turns_the_image_gets_no_geometry_and_no_stretched_overlay():
    """Donut's processor turns a portrait image a quarter turn to fit a landscape input (do_align_long_axis): no
    axis-aligned map exists, so there is no geometry, and the overlay is the model input, with a note."""
    from transformers import DonutImageProcessor

    processor = DonutImageProcessor(size={"height": 32, "width": 48}, do_align_long_axis=True)
    assert probe_geometry(_pixel_values(processor), (30, 60)) is None  # portrait into landscape: turned
    assert probe_geometry(_pixel_values(processor), (60, 30)) is not None  # landscape: resized and padded only
    model, _ = zoo.build_tiny("resnet")
    explainer = IIAExplainer(model, processor, device="cpu", steps=1, progress=False)
    photo = Image.fromarray(np.random.RandomState(1).randint(0, 256, (60, 30, 3), dtype=np.uint8))
    explanation = explainer(photo, target=0)
    assert explanation.geometry is None and explanation.overlay_note is not None
    with pytest.warns(UserWarning, match="drawn on the model input"):
        overlay = explanation.overlay()
    assert overlay.size == (48, 32) != photo.size  # the model input, not the photo stretched
    with pytest.raises(GeometryError, match="explanation.heatmap with explanation.pixel_values"):
        explanation.heatmap_on_image()
    explained = explainer(photo.transpose(Image.Transpose.ROTATE_90), target=0)  # landscape: geometry known
    assert explained.overlay_note is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert explained.overlay().size == (60, 30)


# -------------------------------------------------------------------------------------- black start
@pytest.mark.parametrize("kind", ["efficientnet", "mobilevit", "pp_lcnet"])
def test_black_start_is_the_processor_output_for_a_black_image(kind, tmp_path):
    """EfficientNet rescales with an offset, MobileViT does not normalise and flips to BGR, PP-LCNet flips to BGR:
    (0 - mean) / std is wrong for each; the start is the processor's own black image, exactly."""
    folder = zoo.save_tiny(kind, tmp_path / kind)
    explainer = IIAExplainer(folder, device="cpu", start="black", progress=False)
    pixel_values, _ = explainer.preprocess(Image.new("RGB", (40, 52), (200, 10, 90)))
    height, width = pixel_values.shape[-2:]
    black = explainer.processor(images=[Image.new("RGB", (width, height))], return_tensors="pt")["pixel_values"]
    assert explainer.spec.start is not None
    start = explainer.spec.start(pixel_values.repeat(2, 1, 1, 1))
    assert torch.equal(start, black.expand(2, -1, -1, -1))
    assert torch.equal(explainer.spec.start(pixel_values), black)  # cached per input size: the same again


def test_black_start_without_a_processor_is_refused():
    model, _ = zoo.build_tiny("resnet")
    with pytest.raises(IIAError, match="start='black' needs the image processor.+pass processor="):
        IIAExplainer(model, start="black", progress=False)
