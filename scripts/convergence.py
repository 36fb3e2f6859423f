"""Convergence of IIA's Riemann sum: steps per path vs. distance to a high-step reference map.

Each path of the iterated integral is discretised with evenly spaced points (``--rule``;
default: each family's default, end points included for CNNs, ``a = 0`` left out for ViTs). As ``steps`` grows the map converges to the integral; this script
prints, for one CNN (ResNet) and one ViT with random weights, the mean absolute
difference between the normalised map at ``steps`` and the map at ``--reference`` steps
(every path gets the same step count), averaged over pixels and images, plus the
relative L2 error of the raw (un-normalised) integral.

    python scripts/convergence.py                    # CPU, default models
    python scripts/convergence.py --steps 1 2 4 8 16 32 --reference 128 --images 8 --size 64

tests/test_guarantees.py runs this script with smaller models to check that the
difference decreases.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from hf_iia import IIAExplainer
from hf_iia.engine import integrate
from hf_iia.testing import build_tiny, depth_width


def build(kind: str, size: int = 64, seed: int = 0) -> torch.nn.Module:
    """A small random-weight 10-class ``resnet`` or ``vit`` classifier of the zoo for ``size`` x ``size`` inputs."""
    labels = {i: f"LABEL_{i}" for i in range(10)}
    if kind == "resnet":
        # Three basic-block stages of width 16, 32 and 64.
        model, _ = build_tiny(
            "resnet", labels, seed, embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1], layer_type="basic"
        )
        # Fresh BatchNorm layers are the identity and the convolutions have no bias, which makes a random ResNet
        # positively homogeneous: then every Riemann sum is exact and nothing converges. Give the BatchNorm
        # layers trained-looking statistics so the integrand is a genuinely non-linear function of the path.
        generator = torch.Generator().manual_seed(seed)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(0.5 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
                module.weight.data.copy_(0.5 + torch.rand(shape, generator=generator))
                module.bias.data.copy_(0.5 * torch.randn(shape, generator=generator))
        return model
    if kind == "vit":
        # Three blocks of width 32 (4 heads) on 8 px patches.
        model, _ = build_tiny("vit", labels, seed, image_size=size, **depth_width("vit", depth=3, width=32))
        return model
    raise ValueError(f"unknown kind {kind!r}; use 'resnet' or 'vit'")


def _maps(model: torch.nn.Module, pixel_values: torch.Tensor, steps: int, target: torch.Tensor, rule: str | None):
    explainer = IIAExplainer(model, steps=steps, rule=rule, progress=False, internal_batch_size=1024)
    maps = explainer.attribute(pixel_values, target)
    result = integrate(
        explainer.adapter, pixel_values, target, explainer.spec, internal_batch_size=1024, progress=False
    )
    raw = torch.cat([value.flatten(1) for value in result.integrals.values()], dim=1)
    return maps, raw, explainer.spec.points_per_image


def table(
    kind: str,
    steps: Sequence[int],
    reference: int,
    *,
    size: int = 64,
    images: int = 2,
    seed: int = 0,
    rule: str | None = None,
) -> list[dict]:
    """Rows ``{steps, points, map_mad, integral_rel_l2, seconds}`` against the ``reference``-step map (fixed top-1
    targets); ``rule``: the quadrature rule (``None``: the family's default)."""
    model = build(kind, size, seed)
    pixel_values = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        target = model(pixel_values).logits.argmax(dim=1)
    ref_maps, ref_raw, _ = _maps(model, pixel_values, reference, target, rule)
    rows = []
    for n in steps:
        start = time.perf_counter()
        maps, raw, points = _maps(model, pixel_values, n, target, rule)
        rows.append(
            {
                "steps": n,
                "points": points,
                "map_mad": float((maps - ref_maps).abs().mean()),
                "integral_rel_l2": float(((raw - ref_raw).norm(dim=1) / ref_raw.norm(dim=1)).mean()),
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet", "vit"])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--reference", type=int, default=64)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--rule",
        choices=["endpoints", "riemann_right", "trapezoid"],
        help="quadrature rule on every path (default: each family's default)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for kind in args.models:
        print(f"\n{kind} ({args.size}x{args.size}, {args.images} images, reference = {args.reference} steps per path)")
        print("| steps | points/image | mean abs diff of map | rel. L2 error of integral | s per batch |")
        print("|---:|---:|---:|---:|---:|")
        for row in table(kind, args.steps, args.reference, size=args.size, images=args.images, rule=args.rule):
            print(
                f"| {row['steps']} | {row['points']} | {row['map_mad']:.5f} | {row['integral_rel_l2']:.5f} | "
                f"{row['seconds']:.2f} |"
            )


if __name__ == "__main__":
    main()
