"""Deletion / insertion AUC (Petsiuk et al., 2018) as a Hugging Face ``evaluate`` metric.

Load it offline from this directory::

    import evaluate
    del_ins = evaluate.load("path/to/hf_iia/metrics/del_ins")
    result = del_ins.compute(heatmaps=maps, targets=labels, pixel_values=images, forward=model)

The numbers come from :func:`hf_iia.metrics.perturbation.deletion_auc` and
:func:`hf_iia.metrics.perturbation.insertion_auc`; ``hf_iia`` must be importable.
"""

from __future__ import annotations

import datasets
import evaluate
import torch

from hf_iia.metrics.perturbation import Forward, MetricInputError, deletion_auc, insertion_auc

_CITATION = """\
@inproceedings{petsiuk2018rise,
  title={RISE: Randomized Input Sampling for Explanation of Black-box Models},
  author={Petsiuk, Vitali and Das, Abir and Saenko, Kate},
  booktitle={British Machine Vision Conference (BMVC)},
  year={2018}
}
"""

_DESCRIPTION = """\
Deletion and insertion AUC of saliency maps. Pixels are ranked by decreasing map value
(ties: row-major index, lower first). Deletion sets the top k/steps fraction of pixels
(all channels) to `baseline`; insertion starts from a Gaussian-blurred image and restores
the top k/steps fraction to the original values, for k = 0..steps. The score is the softmax
probability of the target class and the AUC is the trapezoid rule over the fractions in
[0, 1]. Lower deletion and higher insertion AUC mean a more faithful map.
"""

_KWARGS_DESCRIPTION = """
Args:
    heatmaps: `[B, H, W]` saliency maps (torch, numpy or nested lists), stored as float64.
    targets: `[B]` integer target classes.
    pixel_values: `[B, C, H, W]` normalised model inputs, stored as float32.
    forward: callable mapping float32 pixel values `[N, C, H, W]` to logits `[N, num_classes]`
        or to an object with `.logits` (e.g. a `transformers` image classification model).
    steps (`int`, default 100): number of deletion / insertion steps.
    baseline (`float`, default 0.0): value of deleted pixels in normalised input space.
    blur_kernel_size (`int`, default 11): odd width of the insertion Gaussian kernel.
    blur_sigma (`float`, default 5.0): standard deviation of the insertion Gaussian kernel.
    batch_size (`int`, default 64): perturbed images per forward pass.
    device (`str` or `torch.device`, optional): where the images are evaluated; default the
        device of the first parameter of `forward` if it is a `torch.nn.Module` with
        parameters, else CPU.
Returns:
    deletion_auc (`float`): mean deletion AUC over the images (lower is better).
    insertion_auc (`float`): mean insertion AUC over the images (higher is better).
    deletion_auc_per_image (`list[float]`): `[B]` deletion AUC of each image.
    insertion_auc_per_image (`list[float]`): `[B]` insertion AUC of each image.
Examples:
    >>> del_ins = evaluate.load("hf_iia/metrics/del_ins")
    >>> result = del_ins.compute(heatmaps=maps, targets=labels, pixel_values=images, forward=model, steps=20)
    >>> sorted(result)
    ['deletion_auc', 'deletion_auc_per_image', 'insertion_auc', 'insertion_auc_per_image']
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DelIns(evaluate.Metric):
    """Deletion / insertion AUC metric; inputs are `heatmaps`, `targets` and `pixel_values`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "heatmaps": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                    "targets": datasets.Value("int64"),
                    "pixel_values": datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("float32")))),
                }
            ),
            reference_urls=["https://arxiv.org/abs/1806.07421"],
        )

    def _compute(
        self,
        heatmaps: list[list[list[float]]],
        targets: list[int],
        pixel_values: list[list[list[list[float]]]],
        forward: Forward | None = None,
        steps: int = 100,
        baseline: float = 0.0,
        blur_kernel_size: int = 11,
        blur_sigma: float = 5.0,
        batch_size: int = 64,
        device: str | torch.device | None = None,
    ) -> dict[str, float | list[float]]:
        if forward is None:
            raise MetricInputError("del_ins needs the model: pass compute(..., forward=model_or_callable).")
        if device is None:
            parameter = next(forward.parameters(), None) if isinstance(forward, torch.nn.Module) else None
            device = parameter.device if parameter is not None else torch.device("cpu")
        maps = torch.tensor(heatmaps, dtype=torch.float64)
        images = torch.tensor(pixel_values, dtype=torch.float32, device=device)
        labels = torch.tensor(targets, dtype=torch.long)
        deletion = deletion_auc(
            forward, images, maps, labels, steps=steps, baseline=baseline, batch_size=batch_size
        ).cpu()
        insertion = insertion_auc(
            forward,
            images,
            maps,
            labels,
            steps=steps,
            blur_kernel_size=blur_kernel_size,
            blur_sigma=blur_sigma,
            batch_size=batch_size,
        ).cpu()
        return {
            "deletion_auc": float(deletion.mean()),
            "insertion_auc": float(insertion.mean()),
            "deletion_auc_per_image": deletion.tolist(),
            "insertion_auc_per_image": insertion.tolist(),
        }
