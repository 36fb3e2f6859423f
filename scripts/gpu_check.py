"""GPU check: model-level agreement on CUDA (fp32 vs CPU, bf16/fp16 vs fp32) for every tiny architecture
and the real EfficientNet-Lite0, printed as a table.

    python scripts/gpu_check.py            # needs a CUDA device

Agreement is measured on min-max normalised maps: max |CUDA fp32 - CPU fp32|, and the
Spearman rank correlation of bf16 / fp16 maps with the fp32 map on the same device.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hf_iia import IIAExplainer
from hf_iia.testing import TINY_KINDS, depth_width, save_tiny
from hf_iia.tools.demo import build_lite0_checkpoint, sample_images


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [t.flatten().double().argsort().argsort().double() for t in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def check(name: str, folder: Path, inputs) -> None:
    cpu = IIAExplainer(folder, device="cpu", progress=False)
    reference = cpu.attribute(inputs) if isinstance(inputs, torch.Tensor) else None
    row = [name]
    maps = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        explainer = IIAExplainer(folder, device="cuda", dtype=dtype, progress=False)
        start = time.perf_counter()
        if isinstance(inputs, torch.Tensor):
            maps[dtype] = explainer.attribute(inputs)
        else:
            maps[dtype] = torch.stack([torch.from_numpy(e.heatmap) for e in explainer(inputs)])
        torch.cuda.synchronize()
        row.append(f"{time.perf_counter() - start:.2f}s")
    if reference is None:
        reference = torch.stack([torch.from_numpy(e.heatmap) for e in cpu(inputs)])
    row.append(f"{(maps[torch.float32] - reference).abs().max():.2e}")
    row += [f"{spearman(maps[d], maps[torch.float32]):.4f}" for d in (torch.bfloat16, torch.float16)]
    print("| " + " | ".join(row) + " |", flush=True)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help only
    assert torch.cuda.is_available(), "needs a CUDA device"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print(
        "| model | fp32 time | bf16 time | fp16 time | max abs diff CUDA fp32 vs CPU | Spearman bf16 | Spearman fp16 |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        pixel_values = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        for kind, model_type in TINY_KINDS.items():
            folder = save_tiny(model_type, Path(tmp) / kind, **depth_width(model_type, depth=3, width=32))
            check(f"tiny {kind}", folder, pixel_values)
        photos = [image for _, image in sample_images()]
        check("EfficientNet-Lite0 (7 photos)", build_lite0_checkpoint(Path(tmp) / "lite0"), photos)


if __name__ == "__main__":
    main()
