"""Attribution methods behind one call: IIA and the methods it is compared with.

A method is a small :class:`~hf_iia.methods.base.Method` subclass in one file of this package, registered with
:func:`register_method`: how to build the :class:`~hf_iia.engine.IntegralSpec` for an adapter (which taps, which
points, which integrand) and a *fusion* that turns the integrals into raw maps.
:class:`~hf_iia.explainer.IIAExplainer` runs every method through the same code path (device, batching, targets,
engine, upsampling with the adapter's mode, min-max normalisation); only the spec, the fusion and, for Score-CAM and
AttnLRP, what runs around the engine's integral (:meth:`Method.run`) differ.

========================  ===============  ================================================
name                      adapters         what it integrates, and how it is fused
========================  ===============  ================================================
``iia``                   every family     the preset's iterated integral; the adapter's map
``ig``                    any model        ``dy/dx`` on the image path (right Riemann sum,
                                           zero baseline); ``(x - x') *`` it, channel sum
``gradcam``               feature maps     :func:`~hf_iia.integrands.gradcam` at ``a = 1``;
                                           channel sum, ReLU
``gradcam++``             feature maps     :func:`~hf_iia.integrands.gradcam_plus_plus` at
                                           ``a = 1``; channel sum, ReLU
``layercam``              feature maps     :func:`~hf_iia.integrands.layercam` at ``a = 1``;
                                           channel sum, ReLU (Jiang et al. 2021)
``scorecam``              feature maps     the feature map at ``a = 1``, each channel weighed
                                           by the target logit of the input masked by it
                                           (softmax over channels); channel sum, ReLU
                                           (Wang et al. 2020)
``attention_rollout``     attention        every block's attention at ``a = 1``; rollout of
                                           ``(A + I) / 2`` (Abnar & Zuidema 2020)
``gradient_rollout``      attention        IIA's ViT integrand at ``a = 1`` only; the same
                                           rollout
``gae``                   attention        IIA's ViT integrand at ``a = 1``;
                                           :func:`~hf_iia.fusions.gae_rollout` (Chefer 2021)
``attnlrp``               relevance        ``x * dy/dx`` at ``a = 1`` under the adapter's LRP
                                           rules; channel sum, signed (Achtibat et al. 2024)
``legrad``                attention        every block's ``dS_l/dA_l`` at ``a = 1`` (``S_l``:
                                           the head on block ``l``'s output); ReLU, mean over
                                           heads, rows and blocks (Bousselham et al. 2024)
========================  ===============  ================================================

"feature maps", "attention" and "relevance" are the capabilities :class:`~hf_iia.adapters.FeatureMapAdapter`,
:class:`~hf_iia.adapters.AttentionAdapter` and :class:`~hf_iia.adapters.RelevanceAdapter`; a method names the
capability it needs, never a family, so a new family gets every method its representation supports.

Attention Rollout reads no gradient: the engine's one backward pass at ``a = 1`` is computed
and left unused (cheap next to the forward pass, and it keeps one code path).

Score-CAM needs more than the integral, so its :meth:`Method.run` wraps the engine's: ``K`` forward passes of
masked images per image after it (``K`` channels; :mod:`.cams`). AttnLRP and LeGrad change only the gradients the
engine reads, so they override :meth:`Method.installed` (the adapter's LRP rules, :mod:`.attnlrp`; its block
predictions, :mod:`.legrad`). The explainer still does device, batching, targets, upsampling and normalisation as
for every method.

Options: ``layer`` picks the explained layer of ``iia`` and the feature-map methods;
``preset``, ``integrand``, ``baselines``, ``rule``, ``fusion`` and ``combine`` are IIA's; ``steps`` sets IIA's steps
or IG's step count; ``start`` names the image path's start of ``iia`` and ``ig``
(:data:`~hf_iia.presets.STARTS`). Giving a method an option it does not read raises
:class:`~hf_iia.errors.MethodError`.

IIA's map on a feature-map model is formed where ``combine=`` says (:data:`~hf_iia.fusions.LEVEL_FUSIONS`):
``"deepest"`` (the default) channel-sums the integral at the deepest interpolated level; ``"earliest"`` reads the
integrand at the earliest level instead (a finer grid); ``"product"`` and ``"sum"`` read every level and multiply or
average their normalised channel sums on the finest grid. An attention model's map is its rollout (``fusion=``).

Adding a method: write ``methods/<name>.py`` with a :class:`Method` subclass decorated with
``@register_method("<name>")``, and add its module to the import line below (the registry's list of methods, as
:mod:`hf_iia.adapters` lists its families). :func:`available_methods` lists what ``method=`` takes.
"""

from .base import (
    METHODS,
    Fusion,
    Integrator,
    Method,
    MethodOptions,
    Prepared,
    available_methods,
    input_size,
    methods_for,
    prepare,
    register_method,
    unregister_method,
)

# isort: off
# The registry's list of methods: each module registers its methods when imported, in this order (the order of
# METHODS, iia first). After the base's names, so that a method module may import them from hf_iia.methods.
from . import iia, ig, cams, rollouts, attnlrp, legrad  # noqa: F401

# isort: on
from .ig import IG_BASELINE, IG_STEPS

__all__ = [
    "IG_BASELINE",
    "IG_STEPS",
    "METHODS",
    "Fusion",
    "Integrator",
    "Method",
    "MethodOptions",
    "Prepared",
    "available_methods",
    "input_size",
    "methods_for",
    "prepare",
    "register_method",
    "unregister_method",
]
