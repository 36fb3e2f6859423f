"""Seconds per map and peak memory of IIA beside its floor, for random-weight models at 224 px.

Models (one table, :data:`MODELS`, built with ``AutoModelForImageClassification.from_config``):
ResNet-50, ViT-B/16, Swin-T, DINOv2-S/14, BEiT-B/16, EfficientNet-B0 and MobileNetV2.

Floors, measured in the same run on the same machine, by the family of the model's adapter:
- CNN family (ResNet and the probed stage models): one no-grad batched forward pass of the
  image-path points (input steps + 1 images) through the network up to the explained layer
  (the default's deepest level), where the forward is stopped. The backward of the default
  runs through the head only (the gradient is taken at the explained layer), so it is not
  part of the floor;
- ViT family: one batched forward + backward pass (gradient w.r.t. the input, no parameter
  gradients) of as many images as the default preset has integration points, with eager
  attention (IIA needs the attention probabilities); the same floor with the model's SDPA
  attention is shown too.

Every case runs in a fresh subprocess so that peak memory is its own: on CPU the peak
resident set size above the process's size before the case (``ru_maxrss``), on CUDA
``torch.cuda.max_memory_allocated``. Time = median of ``--repeats`` runs after one warm-up;
the explainer is built (and a stage model probed) before the timing.

    python scripts/bench_speed.py                      # CPU, every model, both presets
    python scripts/bench_speed.py --models swin-t mobilenet-v2 --presets default
    python scripts/bench_speed.py --device cuda --models vit-b16

``--lite0 FOLDER`` times instead the default preset on the real EfficientNet-Lite0 (written into ``FOLDER`` once by
:func:`hf_iia.tools.demo.build_lite0_checkpoint`), explaining the 7 demo photos
(:func:`hf_iia.tools.demo.sample_images`) in one ``attribute`` call, in this process; points per map are the rows
that reach the classifier, counted by a hook (so the figure is the same for any version of the package):

    python scripts/bench_speed.py --lite0 /tmp/lite0 --threads 2 --repeats 3

``--lite0 FOLDER --captum`` compares instead ``method="ig"`` (50 right-Riemann steps, ``internal_batch_size`` points a
chunk) with Captum's ``IntegratedGradients(n_steps=50, internal_batch_size=...)`` (``method="riemann_right"``: the
same 50 points, zero baseline) on the same timm network (the checkpoint's ``timm_model``), the same 7 photos and
targets, interleaved (IIA, Captum, IIA, Captum, ...: the machine's load weighs on both alike); the ratio is Captum's
seconds over IIA's (> 1: IIA is faster), with the kernel's share of the CPU time and the page faults; several
``--internal-batch-size`` values give one row each:

    python scripts/bench_speed.py --lite0 /tmp/lite0 --captum --threads 2 --repeats 3 --internal-batch-size 64 16 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet50": ("resnet", {"layer_type": "bottleneck", "depths": [3, 4, 6, 3]}),
    "vit-b16": ("vit", {}),
    "swin-t": ("swin", {}),  # SwinConfig defaults are swin-tiny
    "dinov2-s": (
        "dinov2",
        {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "patch_size": 14, "image_size": 224},
    ),
    "beit-b": ("beit", {}),
    # EfficientNetConfig defaults are B7; these are the B0 settings
    "efficientnet-b0": (
        "efficientnet",
        {
            "width_coefficient": 1.0,
            "depth_coefficient": 1.0,
            "image_size": 224,
            "hidden_dim": 1280,
            "dropout_rate": 0.2,
        },
    ),
    "mobilenet-v2": ("mobilenet_v2", {}),
}
"""Benchmark name -> (``config.model_type``, keyword arguments of ``AutoConfig.for_model``), 1000 classes each."""


def build(name: str, attention: str = "eager") -> nn.Module:
    """The random-weight (seed 0) classifier ``name`` of :data:`MODELS`, with the ``attention`` implementation."""
    from transformers import AutoConfig, AutoModelForImageClassification

    model_type, kwargs = MODELS[name]
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, num_labels=1000, **kwargs)
    return AutoModelForImageClassification.from_config(config, attn_implementation=attention)


class _Reached(Exception):
    """Raised by the CNN floor's hook once the explained layer has run: the floor's forward ends there."""


def _stop(module: nn.Module, args: tuple, output: object) -> None:
    raise _Reached


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize()


def run_case(
    model_name: str, case: str, device: str, dtype: str, repeats: int, internal_batch_size: int | None
) -> dict:
    """Time one case in this process; returns seconds per map and peak memory in MiB."""
    from hf_iia import IIAExplainer

    device = torch.device(device)
    dtype = getattr(torch, dtype)
    model = build(model_name, "sdpa" if case == "floor-sdpa" else "eager").to(device, dtype).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    explainer = IIAExplainer(
        model,
        preset="default" if case.startswith("floor") else case,
        internal_batch_size=internal_batch_size,
        progress=False,
    )
    family = explainer.family.name
    if case in ("default", "reference"):
        points = explainer.spec.points_per_image

        def once():
            explainer.attribute(x, target=1)
    elif family == "cnn":  # floor: no-grad forward of the image-path points up to the explained layer
        points = explainer.spec.input_path.points
        batch = torch.linspace(0, 1, points, device=device, dtype=dtype).view(-1, 1, 1, 1) * x
        model.get_submodule(explainer.spec.levels[-1][0]).register_forward_hook(_stop)

        def once():
            with torch.no_grad(), contextlib.suppress(_Reached):
                model(batch)
    else:  # floor: forward + backward (to the input) of as many images as the default preset has points
        points = explainer.spec.points_per_image
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
    return {
        "seconds": statistics.median(times),
        "peak_mib": max(peak, 0) / 2**20,
        "points": points,
        "family": family,
        "internal_batch_size": explainer.internal_batch_size,
    }


def run_lite0(folder: str, repeats: int, internal_batch_size: int) -> dict:
    """Time the default preset on the real Lite0 for the 7 demo photos in one call; seconds per map = median call
    time / 7 after one warm-up call, in wall-clock time and in this process's CPU time (all threads: less inflated
    than the wall clock when other jobs share the cores)."""
    from hf_iia import IIAExplainer
    from hf_iia.tools.demo import build_lite0_checkpoint, sample_images

    explainer = IIAExplainer(
        str(build_lite0_checkpoint(folder)), internal_batch_size=internal_batch_size, progress=False
    )
    pixel_values, _ = explainer.preprocess([image for _, image in sample_images()])
    rows = []
    explainer.model.timm_model.get_classifier().register_forward_pre_hook(
        lambda module, args: rows.append(args[0].shape[0])
    )
    explainer.attribute(pixel_values)
    points = sum(rows) / pixel_values.shape[0]
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        explainer.attribute(pixel_values)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    images = pixel_values.shape[0]
    return {
        "seconds": statistics.median(times) / images,
        "cpu_seconds": statistics.median(cpu_times) / images,
        "points": points,
        "times": times,
    }


def run_lite0_captum(folder: str, repeats: int, internal_batch_size: int) -> dict:
    """Interleaved s/map of IIA's ``ig`` and Captum's IG on the real Lite0, one call of each for the 7 demo photos per
    repeat, after one warm-up call of each: wall clock, this process's CPU time (all threads), the part of it spent in
    the kernel (``sys``) and the minor page faults per map (``getrusage``). On Linux, glibc's malloc serves tensors
    over 32 MiB (its largest mmap threshold) with fresh pages each time, so a chunk a few rows larger can cost far
    more kernel time: the two counters show it."""
    from captum.attr import IntegratedGradients

    from hf_iia import IIAExplainer
    from hf_iia.methods.ig import IG_STEPS
    from hf_iia.tools.demo import build_lite0_checkpoint, sample_images

    explainer = IIAExplainer(
        str(build_lite0_checkpoint(folder)), method="ig", internal_batch_size=internal_batch_size, progress=False
    )
    pixel_values, _ = explainer.preprocess([image for _, image in sample_images()])
    network = explainer.model.timm_model.eval()
    with torch.no_grad():
        targets = network(pixel_values).argmax(dim=1)
    captum = IntegratedGradients(network)

    def iia() -> None:
        explainer.attribute(pixel_values, target=targets)

    def peer() -> None:
        captum.attribute(
            pixel_values,
            baselines=0.0,
            target=targets,
            n_steps=IG_STEPS,
            internal_batch_size=internal_batch_size,
            method="riemann_right",
        )

    contenders = {"iia": iia, "captum": peer}
    figures: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": [], "sys": [], "faults": []} for name in contenders
    }
    for repeat in range(repeats + 1):  # repeat 0 warms both up
        for name, call in contenders.items():
            start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            call()
            wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
            if repeat:
                system = after.ru_stime - before.ru_stime
                figures[name]["wall"].append(wall / len(targets))
                figures[name]["cpu"].append((after.ru_utime - before.ru_utime + system) / len(targets))
                figures[name]["sys"].append(system / len(targets))
                figures[name]["faults"].append((after.ru_minflt - before.ru_minflt) / len(targets))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--presets", nargs="+", default=["default", "reference"], choices=["default", "reference"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--internal-batch-size",
        type=int,
        nargs="+",
        help="points per chunk, one run each (default: the explainer's own; 64 for --lite0)",
    )
    parser.add_argument("--lite0", metavar="FOLDER", help="time the real Lite0 on the demo photos (see above)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for --lite0 (default: torch's)")
    parser.add_argument("--captum", action="store_true", help="with --lite0: ig against Captum's IG (see above)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    chunks: list[int | None] = args.internal_batch_size or [None]
    if args.lite0:
        lite0_chunk = chunks[0] or 64
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.captum:
            print(f"Lite0 IG, 7 photos per call, CPU x{torch.get_num_threads()} threads, median of {args.repeats}")
            print("| internal_batch_size | clock | iia /map | captum /map | captum / iia | runs | load avg 1 min |")
            print("|---:|---|---:|---:|---:|---|---:|")
            for chunk in [size or 64 for size in chunks]:
                figures = run_lite0_captum(args.lite0, args.repeats, chunk)
                for clock in ("wall", "cpu", "sys", "faults"):
                    iia, peer = (statistics.median(figures[name][clock]) for name in ("iia", "captum"))
                    raw = "; ".join(
                        f"{name} " + ", ".join(f"{v:.3g}" for v in figures[name][clock]) for name in figures
                    )
                    ratio = f"{peer / iia:.2f}" if iia else "–"  # no page fault at all: nothing to compare
                    print(
                        f"| {chunk} | {clock} | {iia:.3g} | {peer:.3g} | {ratio} | {raw} | {os.getloadavg()[0]:.2f} |"
                    )
            return
        result = run_lite0(args.lite0, args.repeats, lite0_chunk)
        calls = ", ".join(f"{seconds:.2f}" for seconds in result["times"])
        print(
            f"Lite0, 7 photos in one call, CPU x{torch.get_num_threads()} threads: {result['seconds']:.3f} s/map "
            f"(median; calls {calls} s), CPU time {result['cpu_seconds']:.3f} s/map, {result['points']:g} points/map, "
            f"load avg 1 min {os.getloadavg()[0]:.2f}"
        )
        return
    if args.case:
        print(json.dumps(run_case(args.model, args.case, args.device, args.dtype, args.repeats, chunks[0])))
        return
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    )
    print(f"device: {device_name}, dtype {args.dtype}, torch {torch.__version__}, median of {args.repeats}\n")
    print("| model | case | internal_batch_size | points/map | s/map | x floor | peak MiB | load avg 1 min |")
    print("|---|---|---|---|---|---|---|---|")
    for model_name in args.models:
        results = {}
        for case in ["floor", "floor-sdpa", *args.presets]:
            if case == "floor-sdpa" and results["floor"]["family"] != "vit":
                continue
            for ibs in chunks if case in ("default", "reference") else chunks[:1]:
                command = [
                    sys.executable,
                    __file__,
                    "--case",
                    case,
                    "--model",
                    model_name,
                    "--device",
                    args.device,
                    "--dtype",
                    args.dtype,
                    "--repeats",
                    str(args.repeats),
                    *([] if ibs is None else ["--internal-batch-size", str(ibs)]),
                ]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                result = json.loads(output.strip().splitlines()[-1])
                results.setdefault(case, result)
                ratio = result["seconds"] / results["floor"]["seconds"]
                print(
                    f"| {model_name} | {case} | {result['internal_batch_size'] if case in ('default', 'reference') else '-'} "
                    f"| {result['points']} "
                    f"| {result['seconds']:.3f} | {ratio:.2f} | {result['peak_mib']:.0f} | {os.getloadavg()[0]:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
