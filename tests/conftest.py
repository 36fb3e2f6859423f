"""Shared fixtures: tiny random-weight checkpoints of :mod:`hf_iia.testing` saved with ``save_pretrained`` and the
real Lite0 checkpoint.

Every model is built from a real ``transformers`` config, saved into a temporary folder
and loaded back through the public API (``IIAExplainer(folder)``), never mocked. Two shapes:

* ``tiny_folder`` / ``tiny_checkpoint``: 3 blocks / stages, ViT width 32, the 5 labels of :data:`LABELS`;
* ``zoo_folder`` / ``zoo_explainer``: the zoo's defaults (2 blocks / stages, ViT width 16, the zoo's 4 labels
  :data:`hf_iia.testing.LABELS`), for the guarantee, bad-input and safety tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from hf_iia import IIAExplainer
from hf_iia.testing import TINY_KINDS, depth_width, pixels, save_tiny

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

SIZE = 32
LABELS = {0: "cat", 1: "dog", 2: "bird", 3: "tabby, tabby cat", 4: "fish"}
DEPTH, WIDTH = 3, 32
"""The ``tiny_folder`` models: 3 blocks / stages, ViT width 32, the 5 labels of :data:`LABELS`, 32 px inputs."""


@pytest.fixture(scope="session", params=list(TINY_KINDS))
def tiny_checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    """``(kind, folder)`` for every tiny architecture."""
    kind = request.param
    return kind, save_tiny(
        TINY_KINDS[kind], tmp_path_factory.mktemp(f"tiny_{kind}"), LABELS, **depth_width(TINY_KINDS[kind], DEPTH, WIDTH)
    )


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A function ``kind -> folder`` giving one saved tiny checkpoint per architecture (cached)."""
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = save_tiny(
                TINY_KINDS[kind],
                tmp_path_factory.mktemp(f"tiny_{kind}"),
                LABELS,
                **depth_width(TINY_KINDS[kind], DEPTH, WIDTH),
            )
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def zoo_folder(tmp_path_factory):
    """A function ``kind -> folder``: the zoo's default ``kind`` model (seed 0), saved once per session."""
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = save_tiny(TINY_KINDS[kind], tmp_path_factory.mktemp(f"zoo_{kind}"))
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def zoo_explainer(zoo_folder):
    """A function ``(kind, **options) -> IIAExplainer``: a fresh explainer (and so a fresh model) loaded from
    the saved :func:`zoo_folder` checkpoint, on CPU, 2 steps and no progress bar unless ``options`` say otherwise."""

    def make(kind: str, **options) -> IIAExplainer:
        options.setdefault("steps", 2)
        options.setdefault("progress", False)
        options.setdefault("device", "cpu")
        return IIAExplainer(str(zoo_folder(kind)), **options)

    return make


@pytest.fixture(scope="session")
def lite0_folder(tmp_path_factory) -> Path:
    """The real ImageNet EfficientNet-Lite0 as a TimmWrapper checkpoint folder."""
    from hf_iia.tools.demo import build_lite0_checkpoint

    return build_lite0_checkpoint(tmp_path_factory.mktemp("lite0") / "efficientnet_lite0")


@pytest.fixture
def pixel_values() -> torch.Tensor:
    """``[2, 3, 32, 32]`` random normalised inputs (seeded)."""
    return pixels(2, seed=0, size=SIZE)


# Worst cases the invariant tests measured: {invariant: {family: largest |map difference|}}, printed after the run.
_WORST_CASES: dict[str, dict[str, float]] = {}


@pytest.fixture
def worst_case():
    """``record(invariant, family, difference)``: keep the largest difference an invariant test measured."""

    def record(invariant: str, family: str, difference: float | torch.Tensor) -> float:
        value = float(difference)
        row = _WORST_CASES.setdefault(invariant, {})
        row[family] = max(row.get(family, 0.0), value)
        return value

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not _WORST_CASES:
        return
    families = sorted({family for row in _WORST_CASES.values() for family in row})
    terminalreporter.section("invariants: worst |map difference| measured per family (maps in [0, 1])")
    terminalreporter.write_line("| invariant | " + " | ".join(families) + " |")
    terminalreporter.write_line("|---" * (len(families) + 1) + "|")
    for invariant, row in _WORST_CASES.items():
        cells = [f"{row[family]:.1e}" if family in row else "–" for family in families]
        terminalreporter.write_line(f"| {invariant} | " + " | ".join(cells) + " |")
