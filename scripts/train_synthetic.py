#!/usr/bin/env python
"""Train tiny Hugging Face image classifiers on a generated benchmark (synthetic shapes or real textures).

Real ``transformers`` classes are built from configs with random initialisation (no
Hub access) and trained on the data of ``--suite``: :mod:`hf_iia.tools.synthetic` (``synthetic``, the default:
flat shapes on dark clutter) or :mod:`hf_iia.tools.textures` (``textures``: photo textures in shapes among
photo-filled distractors on photo backgrounds; no shortcut variant):

* ``vit``: ``ViTForImageClassification``,
* ``deit``: ``DeiTForImageClassificationWithTeacher``. No teacher exists here, so both
  heads (``cls_logits`` and ``distillation_logits``) are trained on the true label with
  the mean of their cross-entropies; at inference the model averages the two heads, as
  usual,
* ``resnet``: ``ResNetForImageClassification``,
* ``convnext``: ``ConvNextForImageClassification``,
* ``swin``: ``SwinForImageClassification`` (hierarchical windowed attention; explained
  through its stage outputs, :mod:`hf_iia.adapters.stages`),
* ``regnet``: ``RegNetForImageClassification`` (grouped-convolution CNN with
  squeeze-and-excitation; also explained through its stage outputs).

``--shortcut`` also trains a ``--shortcut-arch`` model (default ResNet) on the shortcut
variant of the same images (a class-coloured patch in the top-left corner) into
``<arch>_shortcut/``; its log also reports accuracy on clean images and how often it
follows a conflicting patch.

Data: the training set is samples ``[0, --train-size)`` of data seed ``--data-seed``,
generated once in parallel (``--workers``) and kept on the device as ``uint8``; the
held-out set is samples ``[HELDOUT_START, HELDOUT_START + --heldout-size)``. Clean models
see random horizontal and vertical flips (label- and mask-preserving for every class);
the shortcut model sees none, so its patch stays in its corner.

Recipe: AdamW (weight decay 0.05), linear warm-up over the first 5% of steps then cosine
decay to zero, gradient clipping at 1.0, bf16 autocast on CUDA only.

Output, per model ``OUT/<name>/``: ``config.json`` + ``model.safetensors``
(``save_pretrained``), ``preprocessor_config.json`` (a ``ViTImageProcessor`` that resizes
to ``size x size``, rescales by 1/255 and normalises with mean = std = 0.5, loadable with
``AutoImageProcessor.from_pretrained``) and ``train_log.json``; plus ``OUT/summary.json``.

Example (all six models plus the shortcut ResNet on one GPU)::

    python scripts/train_synthetic.py --arch all --shortcut --device cuda --out /tmp/synthetic_models

The committed checkpoints (``hf_iia/tools/bench/models``, each with its ``train_log.json`` and
``train_stdout.log``) were trained on the 2-core CPU machine, one command per family::

    python scripts/train_synthetic.py --arch resnet --shortcut --steps 1000 --batch-size 64 \
        --train-size 20000 --heldout-size 600 --out OUT                     # 100 % / 100 %, ~2 min each
    python scripts/train_synthetic.py --arch convnext --steps 2500 --batch-size 64 \
        --train-size 20000 --heldout-size 600 --out OUT                     # 99.3 %, 12 min
    python scripts/train_synthetic.py --arch vit --steps 3000 --batch-size 64 --lr 1e-3 \
        --train-size 40000 --heldout-size 600 --eval-every 500 --threads 2 --out OUT   # 99.2 %, 9 min
    python scripts/train_synthetic.py --arch deit --steps 3000 --batch-size 64 --lr 1e-3 \
        --train-size 40000 --heldout-size 600 --eval-every 500 --threads 2 --out OUT   # 99.7 %, 11 min
    python scripts/train_synthetic.py --arch swin --steps 1500 --batch-size 64 --lr 1e-3 \
        --train-size 30000 --heldout-size 600 --eval-every 500 --threads 2 --out OUT   # 99.5 %, 43 min (shared CPU, see below)
    python scripts/train_synthetic.py --arch regnet --steps 1000 --batch-size 64 \
        --train-size 20000 --heldout-size 600 --eval-every 500 --threads 2 --out OUT   # 100 %, 36 min (shared CPU, see below)

(Swin and RegNet ran at the same time, 2 threads each, while other jobs shared the 2 cores:
load average 4-11, so their times are far above what the machine takes alone.)

The texture-suite checkpoints (``hf_iia/tools/bench/models_textures``) were trained on the same machine, the three
commands at the same time, 1 thread each, under a load average of 4-9 (other jobs shared the 2 cores); the
held-out accuracy (chance: 16.7 %) is on the 300 held-out images, whose photo regions no training image showed.
These short runs underfit (the training loss was still falling): the numbers are what 500 steps on the shared
CPU gave::

    python scripts/train_synthetic.py --suite textures --arch ARCH --steps 500 --batch-size 64 --lr LR \
        --train-size 12000 --heldout-size 300 --eval-every 250 --workers 1 --threads 1 --out OUT/ARCH
    # resnet (LR 2e-3): 57.0 %, 5 min;  vit (LR 1.5e-3): 47.7 %, 15 min;  deit (LR 1.5e-3): 52.0 %, 15 min

``train_log.json`` also records the predictions and top-2 logit margins of the first held-out images
(``heldout_check``), so a test re-evaluates each committed checkpoint cheaply.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from transformers import (
    AutoImageProcessor,
    ConvNextConfig,
    ConvNextForImageClassification,
    DeiTConfig,
    DeiTForImageClassificationWithTeacher,
    PreTrainedModel,
    RegNetConfig,
    RegNetForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    SwinConfig,
    SwinForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

from hf_iia.tools import synthetic, textures
from hf_iia.tools.synthetic import HELDOUT_START, NUM_CLASSES, add_shortcut_patch

SUITES = {"synthetic": synthetic, "textures": textures}
"""The generated suites (``--suite``): modules with ``CLASS_NAMES``, ``HELDOUT_START`` and ``make_arrays``; both have
six classes and hold out the indices from the same ``HELDOUT_START``."""
assert all(suite.NUM_CLASSES == NUM_CLASSES and suite.HELDOUT_START == HELDOUT_START for suite in SUITES.values())
CHECK_IMAGES = 48
"""The first held-out images whose predictions and top-2 logit margins the log records, so a test can re-evaluate
the saved checkpoint cheaply."""

ARCHS: tuple[str, ...] = ("vit", "deit", "resnet", "convnext", "swin", "regnet")
"""The architectures this script builds (see :func:`build_model`)."""
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]
_CHUNK = 500  # samples per data-generation task
# transformers' default N(0, 0.02) init is far below 1/sqrt(fan_in) at these tiny widths
# and leaves the LayerNorm models stuck near chance for a long time.
VIT_INITIALIZER_RANGE = 0.1
CONVNEXT_INITIALIZER_RANGE = 0.1
SWIN_INITIALIZER_RANGE = 0.1
PATCHES_PER_SIDE = 8
"""ViT/DeiT/Swin token grid side: 8 x 8 patches (patch 8 at 64 px) trains ~5x faster per step on
CPU than 16 x 16 (ViT) and still resolves the smallest class object (radius 0.14 * size = 9 px)."""


def build_model(arch: str, size: int, class_names: tuple[str, ...] = synthetic.CLASS_NAMES) -> PreTrainedModel:
    """A randomly initialised tiny classifier of ``arch`` for ``size x size`` images of ``class_names``."""
    labels = {
        "num_labels": len(class_names),
        "id2label": dict(enumerate(class_names)),
        "label2id": {name: i for i, name in enumerate(class_names)},
    }
    transformer = {
        "image_size": size,
        "patch_size": max(1, size // PATCHES_PER_SIDE),
        "num_channels": 3,
        "hidden_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 384,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": VIT_INITIALIZER_RANGE,
    }
    if arch == "vit":
        return ViTForImageClassification(ViTConfig(**transformer, **labels))
    if arch == "deit":
        return DeiTForImageClassificationWithTeacher(DeiTConfig(**transformer, **labels))
    if arch == "resnet":
        config = ResNetConfig(
            num_channels=3,
            embedding_size=16,
            hidden_sizes=[16, 32, 64, 128],
            depths=[1, 1, 1, 1],
            layer_type="basic",
            hidden_act="relu",
            **labels,
        )
        return ResNetForImageClassification(config)
    if arch == "convnext":
        config = ConvNextConfig(
            num_channels=3,
            patch_size=4,
            hidden_sizes=[24, 48, 96, 192],
            depths=[1, 1, 2, 1],
            drop_path_rate=0.0,
            initializer_range=CONVNEXT_INITIALIZER_RANGE,
            **labels,
        )
        return ConvNextForImageClassification(config)
    if arch == "swin":
        # Patch 8 and window 4: an 8 x 8 token grid in 4 x 4 (shifted) windows, merged to 4 x 4.
        # Patch 4 (a 16 x 16 grid, three stages) was about twice as slow per step on the 2-core CPU.
        config = SwinConfig(
            image_size=size,
            patch_size=max(1, size // PATCHES_PER_SIDE),
            num_channels=3,
            embed_dim=64,
            depths=[2, 2],
            num_heads=[4, 8],
            window_size=4,
            drop_path_rate=0.0,
            initializer_range=SWIN_INITIALIZER_RANGE,
            **labels,
        )
        return SwinForImageClassification(config)
    if arch == "regnet":
        # Three stages (total stride 16): the last stage is 4 x 4 at 64 px, not the 2 x 2 of the
        # stride-32 ResNet / ConvNeXt, so last-stage maps (IIA's default layer) can localise.
        config = RegNetConfig(
            num_channels=3,
            embedding_size=16,
            hidden_sizes=[48, 96, 192],
            depths=[1, 2, 2],
            groups_width=8,
            layer_type="y",
            **labels,
        )
        return RegNetForImageClassification(config)
    raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")


def _generate_chunk(suite: str, start: int, n: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of samples ``start .. start + n - 1`` of ``suite`` (a worker task)."""
    images, _, labels = SUITES[suite].make_arrays(n, seed=seed, size=size, start=start)
    return images, labels


def generate(suite: str, start: int, n: int, seed: int, size: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Clean images ``uint8 [n, size, size, 3]`` and labels ``int64 [n]`` of ``suite``, in ``workers`` processes."""
    starts = list(range(start, start + n, _CHUNK))
    counts = [min(_CHUNK, start + n - s) for s in starts]
    if workers <= 1:
        parts = [_generate_chunk(suite, s, c, seed, size) for s, c in zip(starts, counts, strict=True)]
    else:
        context = multiprocessing.get_context("fork")
        repeat = len(starts)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            parts = list(pool.map(_generate_chunk, [suite] * repeat, starts, counts, [seed] * repeat, [size] * repeat))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def to_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` images to normalised ``float32 [N, 3, H, W]``, as the saved processor does."""
    mean = torch.tensor(IMAGE_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def random_flips(pixel_values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally and/or vertically with probability 1/2 each."""
    n = pixel_values.shape[0]
    flips = torch.rand((2, n, 1, 1, 1), generator=generator, device=generator.device) < 0.5
    pixel_values = torch.where(flips[0], pixel_values.flip(3), pixel_values)
    return torch.where(flips[1], pixel_values.flip(2), pixel_values)


def training_loss(model: PreTrainedModel, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; for DeiT with teacher the mean over its two heads (both on the label)."""
    outputs = model(pixel_values=pixel_values)
    if isinstance(model, DeiTForImageClassificationWithTeacher):
        return 0.5 * (
            F.cross_entropy(outputs.cls_logits, labels) + F.cross_entropy(outputs.distillation_logits, labels)
        )
    return F.cross_entropy(outputs.logits, labels)


@torch.no_grad()
def predict_logits(
    model: PreTrainedModel, images: torch.Tensor, device: torch.device, batch_size: int = 1000
) -> torch.Tensor:
    """``[N, K]`` logits for ``uint8 [N, H, W, 3]`` images."""
    model.eval()
    logits = []
    for first in range(0, images.shape[0], batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits.append(model(pixel_values=to_pixel_values(images[first : first + batch_size])).logits.float())
    model.train()
    return torch.cat(logits)


def predict(model: PreTrainedModel, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Predicted labels ``[N]`` for ``uint8 [N, H, W, 3]`` images."""
    return predict_logits(model, images, device).argmax(-1)


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of ``steps``, then cosine decay to zero."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


def train(
    name: str,
    model: PreTrainedModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    heldout: tuple[torch.Tensor, torch.Tensor],
    args: argparse.Namespace,
    *,
    augment: bool,
    device: torch.device,
) -> dict[str, Any]:
    """Train ``model`` in place; returns the loss curve, the eval curve (if asked) and the time."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    log_every = max(1, args.steps // 50)
    print_every = max(1, args.steps // 10)
    loss_curve: list[dict[str, float]] = []
    eval_curve: list[dict[str, float]] = []
    running = torch.zeros((), device=device)
    order = torch.randperm(images.shape[0], generator=generator, device=device)
    cursor = 0
    start = time.perf_counter()
    for step in range(args.steps):
        if cursor + args.batch_size > order.numel():
            order = torch.randperm(images.shape[0], generator=generator, device=device)
            cursor = 0
        batch = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        pixel_values = to_pixel_values(images[batch])
        if augment:
            pixel_values = random_flips(pixel_values, generator)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = training_loss(model, pixel_values, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.detach()
        if (step + 1) % log_every == 0:
            loss_curve.append({"step": step + 1, "loss": round(float(running) / log_every, 5)})
            running.zero_()
        if args.eval_every and (step + 1) % args.eval_every == 0:
            accuracy = float((predict(model, heldout[0], device) == heldout[1]).float().mean())
            eval_curve.append({"step": step + 1, "heldout_accuracy": round(accuracy, 4)})
            print(f"  [{name}] step {step + 1}: held-out accuracy {accuracy:.4f}", flush=True)
        if (step + 1) % print_every == 0:
            last = loss_curve[-1]["loss"] if loss_curve else float("nan")
            elapsed = time.perf_counter() - start
            print(f"  [{name}] step {step + 1}/{args.steps}  loss {last:.4f}  {elapsed:.1f}s", flush=True)
    return {"loss_curve": loss_curve, "eval_curve": eval_curve, "train_seconds": round(time.perf_counter() - start, 2)}


def check_reload(folder: Path, model: PreTrainedModel, images: np.ndarray, device: torch.device) -> dict[str, float]:
    """Reload the saved model and processor and compare them with the trained model in fp32."""
    processor = AutoImageProcessor.from_pretrained(folder)
    reloaded = type(model).from_pretrained(folder).to(device).eval()
    model.eval()
    pixel_values = processor(images=[Image.fromarray(x) for x in images], return_tensors="pt")["pixel_values"].to(
        device
    )
    expected = to_pixel_values(torch.from_numpy(images).to(device))
    with torch.no_grad():
        logit_diff = (reloaded(pixel_values=pixel_values).logits - model(pixel_values=expected).logits).abs().max()
    model.train()
    return {
        "processor_pixel_max_abs_diff": float((pixel_values - expected).abs().max()),
        "reload_logit_max_abs_diff": float(logit_diff),
    }


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``predictions`` equal to ``labels``, rounded to 4 digits."""
    return round(float((predictions == labels).float().mean()), 4)


def run_one(
    name: str, arch: str, shortcut: bool, arrays: dict[str, np.ndarray], args: argparse.Namespace
) -> dict[str, Any]:
    """Build, train, evaluate and save one model into ``args.out / name``; returns its log.

    ``arrays`` holds the clean ``train``/``heldout`` images and their ``*_labels``; the
    shortcut variants are made here when ``shortcut`` is set.
    """
    print(f"== {name}: {arch}{' on shortcut data' if shortcut else ''}", flush=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    train_np, heldout_np = arrays["train"], arrays["heldout"]
    heldout_labels_np = arrays["heldout_labels"]
    if shortcut:
        train_np = add_shortcut_patch(train_np, arrays["train_labels"])
        heldout_np = add_shortcut_patch(heldout_np, heldout_labels_np)
    heldout = (torch.from_numpy(heldout_np).to(device), torch.from_numpy(heldout_labels_np).to(device))
    train_data = (torch.from_numpy(train_np).to(device), torch.from_numpy(arrays["train_labels"]).to(device))

    torch.manual_seed(args.seed)
    model = build_model(arch, args.size, SUITES[args.suite].CLASS_NAMES)
    history = train(name, model, *train_data, heldout, args, augment=not shortcut, device=device)
    logits = predict_logits(model, heldout[0], device)
    metrics: dict[str, Any] = {"heldout_accuracy": accuracy(logits.argmax(-1), heldout[1])}
    top2 = logits[:CHECK_IMAGES].topk(2, dim=-1).values
    metrics["heldout_check"] = {
        "n": min(CHECK_IMAGES, logits.shape[0]),
        "predictions": logits[:CHECK_IMAGES].argmax(-1).tolist(),
        "top2_logit_margins": [round(float(m), 5) for m in top2[:, 0] - top2[:, 1]],
    }
    if shortcut:
        # Every held-out image with the patch of another class, cycling through the other five.
        offsets = 1 + np.arange(heldout_labels_np.shape[0]) % (NUM_CLASSES - 1)
        conflict_labels_np = (heldout_labels_np + offsets) % NUM_CLASSES
        conflicting = predict(
            model, torch.from_numpy(add_shortcut_patch(arrays["heldout"], conflict_labels_np)).to(device), device
        )
        clean = predict(model, torch.from_numpy(arrays["heldout"]).to(device), device)
        metrics["heldout_accuracy_clean_images"] = accuracy(clean, heldout[1])
        metrics["conflicting_patch_accuracy"] = accuracy(conflicting, heldout[1])
        metrics["conflicting_patch_followed"] = accuracy(conflicting, torch.from_numpy(conflict_labels_np).to(device))

    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor = ViTImageProcessor(
        do_resize=True,
        size={"height": args.size, "width": args.size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    processor.save_pretrained(folder)
    metrics.update(check_reload(folder, model, heldout_np[:16], device))
    log = {
        "name": name,
        "arch": arch,
        "suite": args.suite,
        "model_class": type(model).__name__,
        "shortcut": shortcut,
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint_bytes": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()),
        "seed": args.seed,
        "data_seed": args.data_seed,
        "size": args.size,
        "train_indices": [0, args.train_size],
        "heldout_indices": [HELDOUT_START, HELDOUT_START + args.heldout_size],
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": 0.05,
        "schedule": "linear warm-up 5% + cosine to 0",
        "augmentation": "none" if shortcut else "random h/v flips",
        "mixed_precision": "bf16 autocast" if device.type == "cuda" else "none",
        **metrics,
        "train_seconds": history["train_seconds"],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "loss_curve": history["loss_curve"],
        "eval_curve": history["eval_curve"],
    }
    (folder / "train_log.json").write_text(json.dumps(log, indent=1))
    shown = {k: v for k, v in metrics.items() if k != "heldout_check"}
    print(f"   {name}: {json.dumps({'train_seconds': log['train_seconds'], **shown})}", flush=True)
    return log


def _run_job(
    name: str, arch: str, shortcut: bool, data_dir: str, args: argparse.Namespace, threads: int
) -> dict[str, Any]:
    """:func:`run_one` in a worker process, reading the arrays that :func:`main` saved in ``data_dir``."""
    torch.set_num_threads(threads)
    arrays = {path.stem: np.load(path) for path in Path(data_dir).glob("*.npy")}
    return run_one(name, arch, shortcut, arrays, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="synthetic", choices=list(SUITES), help="the generated data to train on")
    parser.add_argument("--arch", default="all", choices=[*ARCHS, "all"])
    parser.add_argument("--shortcut", action="store_true", help="also train --shortcut-arch on shortcut data")
    parser.add_argument("--shortcut-arch", default="resnet", choices=ARCHS)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and batching seed")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--heldout-size", type=int, default=2_000)
    parser.add_argument("--eval-every", type=int, default=0, help="held-out evaluation period in steps (0: end only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="data-generation processes")
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="models trained at once, one process each (0: all of them on cuda, 1 on cpu)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per model (0: torch's default)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.heldout_size < 1 or args.train_size < args.batch_size or args.steps < 1:
        parser.error("need --steps >= 1, --heldout-size >= 1 and --train-size >= --batch-size")
    if args.shortcut and args.suite != "synthetic":
        parser.error("--shortcut needs --suite synthetic (the only suite with a shortcut variant)")
    if args.train_size > HELDOUT_START:
        parser.error(f"--train-size must not exceed {HELDOUT_START} (held-out indices start there)")
    return args


def main(argv: list[str] | None = None) -> None:
    """Generate the data once, then train, evaluate and save every requested model."""
    args = parse_args(argv)
    started = time.perf_counter()
    train_images, train_labels = generate(args.suite, 0, args.train_size, args.data_seed, args.size, args.workers)
    heldout_images, heldout_labels = generate(
        args.suite, HELDOUT_START, args.heldout_size, args.data_seed, args.size, args.workers
    )
    arrays = {
        "train": train_images,
        "train_labels": train_labels,
        "heldout": heldout_images,
        "heldout_labels": heldout_labels,
    }
    generation_seconds = time.perf_counter() - started
    print(
        f"generated {args.train_size} train + {args.heldout_size} held-out images in {generation_seconds:.1f}s "
        f"({(args.train_size + args.heldout_size) / generation_seconds:.0f}/s, {args.workers} workers)",
        flush=True,
    )
    runs = [(arch, arch, False) for arch in (ARCHS if args.arch == "all" else (args.arch,))]
    if args.shortcut:
        runs.append((f"{args.shortcut_arch}_shortcut", args.shortcut_arch, True))
    jobs = min(len(runs), args.jobs or (len(runs) if args.device == "cuda" else 1))
    if jobs == 1:
        if args.threads:
            torch.set_num_threads(args.threads)
        logs = [run_one(name, arch, shortcut, arrays, args) for name, arch, shortcut in runs]
    else:
        # Tiny models leave the GPU mostly idle, so several processes share it well. The
        # workers are spawned (the parent never initialises CUDA) and read the arrays from disk.
        threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
        with tempfile.TemporaryDirectory(prefix="synthetic_data_") as data_dir:
            for key, value in arrays.items():
                np.save(Path(data_dir) / f"{key}.npy", value)
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                futures = [pool.submit(_run_job, *run, data_dir, args, threads) for run in runs]
                logs = [future.result() for future in futures]
    summary = {
        "generation_seconds": round(generation_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "total_checkpoint_megabytes": round(sum(log["checkpoint_bytes"] for log in logs) / 1e6, 3),
        "models": {
            log["name"]: {k: v for k, v in log.items() if k not in ("loss_curve", "eval_curve", "name")} for log in logs
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({name: model["heldout_accuracy"] for name, model in summary["models"].items()}), flush=True)
    print(
        f"total {summary['total_seconds']:.1f}s, checkpoints {summary['total_checkpoint_megabytes']:.2f} MB", flush=True
    )


if __name__ == "__main__":
    main()
