# One new file: hf_iia/methods/gradient_x_input.py (plus its name on the import line of hf_iia/methods/__init__.py;
# a file outside the package registers the same way when imported).
from hf_iia.adapters.plain import PlainAdapter
from hf_iia.engine import INPUT_TAP, make_spec
from hf_iia.integrands import grad_act
from hf_iia.methods import Method, register_method


@register_method("gradient_x_input")
class GradientTimesInput(Method):
    """``x * dy/dx`` at the input itself (the single point a = 1), summed over channels; signed."""

    signed = True  # evidence for and against the target: drawings keep the raw zero apart

    def adapter(self, model, options):
        return PlainAdapter(model)  # it reads the input only, so it explains every model

    def spec(self, adapter, options, start):
        return make_spec((), (INPUT_TAP,), (0,), grad_act)  # no level; observe the input; one point
