"""What a benchmark run reports: ``results.md`` tables, the ``maps.png`` figure and where the numbers were measured."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ...errors import MetricError
from ...metrics import available_metrics, get_metric
from .evaluate import MethodResult
from .inputs import BenchInputs
from .stats import CONFIDENCE


class _Titles(Mapping[str, tuple[str, bool]]):
    """Metric key (or alias) -> ``(column title, higher is better)``, read live from the declarations
    (:func:`hf_iia.metrics.available_metrics`); iterates over the registered keys in table order."""

    def __getitem__(self, key: str) -> tuple[str, bool]:
        try:
            metric = get_metric(key)
        except MetricError:
            raise KeyError(key) from None
        return metric.title, metric.higher_is_better

    def __iter__(self) -> Iterator[str]:
        return iter(available_metrics())

    def __len__(self) -> int:
        return len(available_metrics())


METRICS: Mapping[str, tuple[str, bool]] = _Titles()
"""Metric key -> (column title, higher is better), from the metric declarations."""

TIE_TOLERANCE = 1e-6
"""Means closer than this count as tied (float noise, e.g. ``iia`` vs ``iia-reference`` on a linear head)."""


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the numbers were measured."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_name() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device": str(device),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info.update(_git_state())
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _cpu_name() -> str | None:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else ``None``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _git_state() -> dict[str, Any]:
    """The repository commit the code ran from and whether files differed from it (empty outside a git checkout)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if commit.returncode != 0:
        return {}
    return {"git_commit": commit.stdout.strip(), "git_modified_files": status.stdout.split("\n")[:1] != [""]}


def _fmt(summary: dict[str, Any], digits: int = 3) -> str:
    if summary["mean"] is None:
        return "–"
    if summary["half_width"] is None:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['half_width']:.{digits}f}"


def best_methods(model_result: dict[str, Any], metric: str) -> list[str]:
    """The methods with the best mean of ``metric`` (several on a tie)."""
    higher = get_metric(metric).higher_is_better
    means = {
        key: m["summary"][metric]["mean"]
        for key, m in model_result["methods"].items()
        if metric in m["summary"] and m["summary"][metric]["mean"] is not None
    }
    if not means:
        return []
    best = max(means.values()) if higher else min(means.values())
    return [key for key, mean in means.items() if abs(mean - best) <= TIE_TOLERANCE]


def markdown(results: dict[str, Any]) -> str:
    """The results.md text: one table per model, then where IIA is not first."""
    settings, machine = results["settings"], results["machine"]
    lines = [
        f"# hf-iia benchmark: {results['suite']} suite",
        "",
        f"Command: `{settings['command']}`  ",
        f"Machine: {machine['processor']}, {machine['cpu_count']} CPUs, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), device {machine['device']}"
        + (f" ({machine['gpu']})" if "gpu" in machine else "")
        + (
            f", load average at start {machine['load_average_at_start'][0]}"
            if "load_average_at_start" in machine
            else ""
        )
        + "  ",
        f"Wall time: {results['timing']['wall_seconds']:.0f} s  ",
        f"Values: mean ± half-width of a Student-t {CONFIDENCE:.0%} confidence interval over the inputs. "
        f"DEL/INS: {settings['perturbation_steps']} steps, softmax probability of the target, deletion to 0 "
        "(normalised space), insertion from a Gaussian blur (11, sigma 5). ↑ higher is better, ↓ lower is better; "
        "the best mean of each column is in bold.",
        "",
    ]
    if settings.get("protocol") == "paper":
        lines += [
            "Paper protocol (Chefer et al. 2021; docs/BENCHMARKS.md): POS / NEG = accuracy AUC x100 over "
            "fractions 0–0.9 with black pixels (range 0–90); DEL / INS (paper) = the same curves on the "
            "target's probability; ADP / PIC in %; SIC / AIC = AUC of the PAIR performance-information "
            "curves (inputs where the curve is undefined are left out); pixel acc. / mIoU / mAP / mF1 = the "
            "map binarised at its mean against the object mask.",
            "",
        ]
    for model in results["models"]:
        metrics = [m for m in available_metrics() if any(m in r["summary"] for r in model["methods"].values())]
        lines += [f"## {model['name']} ({model['family']}, {model['n']} inputs)", ""]
        if model.get("note"):
            lines += [model["note"], ""]
        header = ["method"] + [f"{get_metric(m).title} {get_metric(m).arrow}" for m in metrics] + ["s / map"]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        best = {m: best_methods(model, m) for m in metrics}
        for key, result in model["methods"].items():
            cells = [f"`{key}`"]
            for m in metrics:
                text = _fmt(result["summary"][m])
                cells.append(f"**{text}**" if key in best[m] else text)
            cells.append(f"{model['timing'][key]['seconds_per_map']:.3g}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if "iia" in model["methods"]:
            lines += _iia_not_first(model, metrics, best)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _iia_not_first(model: dict[str, Any], metrics: list[str], best: dict[str, list[str]]) -> list[str]:
    """Sentences saying plainly where IIA (default) is not the best, with paired differences."""
    lines = []
    for metric in metrics:
        if "iia" in best[metric]:
            continue
        if not best[metric] or model["methods"]["iia"]["summary"][metric]["mean"] is None:
            continue
        winner = best[metric][0]
        diff = model["paired_vs_iia"].get(winner, {}).get(metric)
        iia_mean = model["methods"]["iia"]["summary"][metric]["mean"]
        win_mean = model["methods"][winner]["summary"][metric]["mean"]
        text = f"- {get_metric(metric).title}: `iia` is not first: `{winner}` {win_mean:.3f} vs `iia` {iia_mean:.3f}"
        if diff and diff["half_width"] is not None:
            text += (
                f" (paired difference {winner} − iia = {diff['mean']:+.3f}, 95 % CI "
                f"[{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}])"
            )
        lines.append(text + ".")
    if not lines:
        lines.append("- `iia` has the best mean on every metric here.")
    return lines


def figure(models: list[tuple[str, BenchInputs, dict[str, MethodResult]]], tile: int = 160) -> Image.Image:
    """maps.png: per model, a few inputs (rows) x [input, one overlay per method] (columns)."""
    from ...viz import grid, overlay

    columns = 1 + max(len(results) for _, _, results in models)
    tiles, captions = [], []
    for name, inputs, results in models:
        for index in inputs.figure:
            view = inputs.views[index]
            record = inputs.records[index]
            target = record.get("label_name") or (record.get("target_name") or str(record["target"])).split(",")[0]
            tiles.append(view.resize((tile, tile), Image.Resampling.NEAREST))
            captions.append(f"{name}: {target}" if len(models) > 1 else f"{record['id']}: {target}")
            for key, result in results.items():
                picture = overlay(view, result.maps[index].numpy())
                tiles.append(picture.resize((tile, tile), Image.Resampling.BILINEAR))
                captions.append(key)
            for _ in range(columns - 1 - len(results)):
                tiles.append(Image.new("RGB", (tile, tile), "white"))
                captions.append("")
    return grid(tiles, captions, columns=columns, tile=tile)
