#!/usr/bin/env python
"""Throughput and peak memory of :func:`hf_iia.data.explain_dataset` for growing dataset lengths.

For every model (a CNN and a ViT built from ``transformers`` configs with random
weights, saved with ``save_pretrained`` and loaded back with ``IIAExplainer(folder)``),
every mode and every length ``N``, a fresh child process explains ``N`` generated images
and reports images/s and its peak resident memory (``ru_maxrss``). Memory is flat in the
dataset's length when the peak barely moves from ``N = 1000`` to ``N = 5000``; the resident
memory at the end is split into anonymous (heap) and file-backed pages (memory-mapped Arrow
files, which the kernel can drop).

Modes:

* ``stream``: a streaming ``IterableDataset`` (``IterableDataset.from_generator``),
  explained lazily while it is iterated; the rows are consumed, not kept.
* ``arrow``: a ``Dataset`` written to Arrow files in a temporary folder, explained into a
  cache file there (the usual case for a dataset loaded from the Hub or from disk).

Configs: ``tiny`` (32 px, two-stage ResNet / 2-block ViT: the default, a short run that
measures the datasets plumbing) and ``small`` (224 px, ResNet-18-sized / ViT-S/16-sized:
for a GPU). ``--steps`` sets IIA's steps per path (default 1, i.e. 4 integration points a
CNN image; the preset's own counts scale the per-image cost of the integral).

Example::

    python scripts/bench_dataset.py                                   # tiny, CPU, about a minute
    python scripts/bench_dataset.py --config small --device cuda --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "tiny": {
        "size": 32,
        "resnet": dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
        "vit": dict(patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    },
    "small": {
        "size": 224,
        "resnet": dict(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic"),
        "vit": dict(
            patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536
        ),
    },
}
NUM_LABELS = 10


def build_checkpoint(arch: str, config_name: str, folder: Path) -> Path:
    """Save a randomly initialised ``arch`` classifier of ``config_name`` size (plus its processor) into ``folder``."""
    from transformers import ViTImageProcessor

    from hf_iia.testing import build_tiny

    spec = CONFIGS[config_name]
    size = {"image_size": spec["size"]} if arch == "vit" else {}
    model, _ = build_tiny(arch, {i: f"LABEL_{i}" for i in range(NUM_LABELS)}, seed=0, **size, **spec[arch])
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": spec["size"], "width": spec["size"]}).save_pretrained(folder)
    return folder


def generate(n: int, size: int):
    """``n`` deterministic random RGB images with labels, generated one at a time."""
    import numpy as np
    from PIL import Image

    for index in range(n):
        rng = np.random.default_rng(index)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        yield {"image": Image.fromarray(pixels), "label": index % NUM_LABELS}


def _resident_parts() -> dict[str, int]:
    """Resident memory now, split into anonymous (heap) and file-backed (e.g. memory-mapped Arrow) MB; Linux only."""
    parts = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("RssAnon:", "RssFile:")):
                name, kilobytes = line.split()[:2]
                parts["anon_mb" if name == "RssAnon:" else "file_mb"] = round(int(kilobytes) / 1024)
    return parts


def child(args: argparse.Namespace) -> dict:
    """One measurement in this process: build, explain ``args.n`` rows, report rate and peak RSS."""
    import datasets
    import torch

    from hf_iia import IIAExplainer
    from hf_iia.data import explain_dataset

    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    size = CONFIGS[args.config]["size"]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    with tempfile.TemporaryDirectory() as scratch:
        folder = build_checkpoint(args.model, args.config, Path(scratch) / "model")
        explainer = IIAExplainer(folder, steps=args.steps, device=args.device, progress=False)
        gen_kwargs = {"n": args.n, "size": size}
        if args.mode == "stream":
            dataset = datasets.IterableDataset.from_generator(generate, features=features, gen_kwargs=gen_kwargs)
        else:
            dataset = datasets.Dataset.from_generator(
                generate, features=features, gen_kwargs=gen_kwargs, cache_dir=os.path.join(scratch, "cache")
            )
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        result = explain_dataset(
            explainer,
            dataset,
            target_column="label",
            batch_size=args.batch_size,
            prefix="iia_",
            cache_file_name=os.path.join(scratch, "explained.arrow") if args.mode == "arrow" else None,
        )
        rows = 0
        for batch in result.select_columns(["iia_score"]).iter(batch_size=1000):  # consume every row
            rows += len(batch["iia_score"])
        seconds = time.perf_counter() - started
    assert rows == args.n, (rows, args.n)
    return {
        **_resident_parts(),
        "model": args.model,
        "config": args.config,
        "mode": args.mode,
        "n": args.n,
        "device": args.device or "auto",
        "seconds": round(seconds, 2),
        "images_per_s": round(args.n / seconds, 1),
        "rss_before_mb": round(baseline),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet", "vit"], choices=["resnet", "vit"])
    parser.add_argument("--modes", nargs="+", default=["stream", "arrow"], choices=["stream", "arrow"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000], help="dataset lengths")
    parser.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=1, help="IIA steps per path")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", help="cpu, cuda, ... (default: the best available)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per child")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    shared = [
        "--config",
        args.config,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        *(["--device", args.device] if args.device else []),
    ]
    print(
        f"{'model':8} {'mode':7} {'N':>6} {'images/s':>9} {'peak RSS MB':>12} {'RSS before MB':>14} "
        f"{'anon MB at end':>15} {'file MB at end':>15}"
    )
    for model in args.models:
        for mode in args.modes:
            for n in args.sizes:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--model",
                    model,
                    "--mode",
                    mode,
                    "--n",
                    str(n),
                    *shared,
                ]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                result = json.loads(output.strip().splitlines()[-1])
                print(
                    f"{model:8} {mode:7} {n:>6} {result['images_per_s']:>9} {result['peak_rss_mb']:>12} "
                    f"{result['rss_before_mb']:>14} {result.get('anon_mb', '-'):>15} "
                    f"{result.get('file_mb', '-'):>15}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
