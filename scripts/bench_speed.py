"""Seconds per map and peak memory of IIA beside its floor, for ResNet-50 and ViT-B/16 (random weights).

Floors, measured in the same run on the same machine:
- CNN: one no-grad batched forward pass of the image-path points (steps + 1 images)
  through the network up to the explained layer (the last stage);
- ViT: one batched forward + backward pass (gradient w.r.t. the input, no parameter
  gradients) of as many images as the default preset has integration points, with eager
  attention (IIA needs the attention probabilities); the same floor with the model's SDPA
  attention is shown too.

Every case runs in a fresh subprocess so that peak memory is its own: on CPU the peak
resident set size above the process's size before the case (``ru_maxrss``), on CUDA
``torch.cuda.max_memory_allocated``. Time = median of ``--repeats`` runs after one warm-up.

    python scripts/bench_speed.py                      # CPU, both models, both presets
    python scripts/bench_speed.py --device cuda --models vit-b16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

MODELS = ("resnet50", "vit-b16")


def build(name: str, attention: str = "eager"):
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    if name == "resnet50":
        return ResNetForImageClassification(ResNetConfig(layer_type="bottleneck", depths=[3, 4, 6, 3], num_labels=1000))
    return ViTForImageClassification(ViTConfig(num_labels=1000, attn_implementation=attention))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize()


def run_case(model_name: str, case: str, device: str, dtype: str, repeats: int, internal_batch_size: int) -> dict:
    """Time one case in this process; returns seconds per map and peak memory in MiB."""
    from hf_iia import IIAExplainer

    device = torch.device(device)
    dtype = getattr(torch, dtype)
    model = build(model_name, "sdpa" if case == "floor-sdpa" else "eager").to(device, dtype).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    if case in ("default", "reference"):
        explainer = IIAExplainer(model, preset=case, internal_batch_size=internal_batch_size, progress=False)
        points = explainer.spec.points_per_image

        def once():
            explainer.attribute(x, target=1)
    elif model_name == "resnet50":  # floor: no-grad forward of the image-path points up to the last stage
        points = 11
        batch = torch.linspace(0, 1, points, device=device, dtype=dtype).view(-1, 1, 1, 1) * x

        def once():
            with torch.no_grad():
                hidden = model.resnet.embedder(batch)
                for stage in model.resnet.encoder.stages:
                    hidden = stage(hidden)
    else:  # floor: forward + backward (to the input) of as many images as the default preset has points
        points = IIAExplainer(model, progress=False).spec.points_per_image
        batch = (torch.linspace(0, 1, points, device=device, dtype=dtype).view(-1, 1, 1, 1) * x).requires_grad_()

        def once():
            logits = model(batch).logits
            torch.autograd.grad(logits[:, 1].sum(), batch)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
    once()  # the first run gives the peak memory (and warms up)
    _sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_mib": max(peak, 0) / 2**20, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--internal-batch-size", type=int, nargs="+", default=[64])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.model, args.case, args.device, args.dtype, args.repeats, args.internal_batch_size[0])))
        return
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    print(f"device: {device_name}, dtype {args.dtype}, torch {torch.__version__}, median of {args.repeats}\n")
    print("| model | case | internal_batch_size | points/map | s/map | x floor | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for model_name in args.models:
        floors = ["floor"] + (["floor-sdpa"] if model_name == "vit-b16" else [])
        results = {}
        for case in floors + ["default", "reference"]:
            for ibs in args.internal_batch_size if case in ("default", "reference") else args.internal_batch_size[:1]:
                command = [sys.executable, __file__, "--case", case, "--model", model_name, "--device", args.device,
                           "--dtype", args.dtype, "--repeats", str(args.repeats), "--internal-batch-size", str(ibs)]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                result = json.loads(output.strip().splitlines()[-1])
                results.setdefault(case, result)
                ratio = result["seconds"] / results["floor"]["seconds"]
                print(f"| {model_name} | {case} | {ibs if case in ('default', 'reference') else '-'} | {result['points']} "
                      f"| {result['seconds']:.3f} | {ratio:.2f} | {result['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
