"""An interrupt at any moment of an explanation leaves the model as found (hf_iia.adapters.guard).

A real signal is raised (``signal.raise_signal``) at every function call the package makes or receives during one
``attribute`` call, one point per call; its handler raises ``KeyboardInterrupt``, as Ctrl-C's does. Function
entry is where CPython runs signal handlers (besides loop back-edges and the return of a C call, which happen
inside such functions), so these points are every moment at which Ctrl-C can land in the package's code or in
what it calls. After each interrupted call the model must be exactly as found (hooks,
classes, train/eval flags, attention implementation and registry, timm's fused-attention switches, signal
handlers), its logits unchanged, its lock free, and the next explanation equal to an uninterrupted one.
"""

from __future__ import annotations

import inspect
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch

import hf_iia
from hf_iia import IIAExplainer
from hf_iia.adapters.guard import Installation
from hf_iia.testing import assert_unchanged, build_tiny, build_tiny_timm, pixels, snapshot

PACKAGE = str(Path(hf_iia.__file__).parent)

MODELS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "vit": lambda: build_tiny("vit"),  # attention switched through AttentionInterface
    "data2vec-vision": lambda: build_tiny("data2vec-vision"),  # attention classes swapped, dropout hooks
    "timm-vit": lambda: build_tiny_timm("test_vit"),  # timm's fused_attn switched off
    "resnet": lambda: build_tiny("resnet"),  # forward hooks on stages
    "swin": lambda: build_tiny("swin"),  # stage hooks with a token layout
    "vit-attnlrp": lambda: build_tiny("vit"),  # LRP rule hooks on LayerNorms and activations
}
METHOD = {"vit-attnlrp": "attnlrp"}


class Interrupted(KeyboardInterrupt):
    """The test's interrupt (a KeyboardInterrupt, so code that catches Exception cannot swallow it)."""


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def _ours(frame: FrameType | None) -> bool:
    return frame is not None and frame.f_code.co_filename.startswith(PACKAGE)


class _InterruptAt:
    """A trace function that raises SIGUSR1 at the ``at``-th call made or received by the package (-1: count)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0
        self.in_finaliser = False  # the interrupt landed in a __del__ or a generator (maybe one being finalised)
        self.dropped = False  # CPython reported it as unraisable (a finaliser or weakref callback run by the GC)
        self.where = ""  # the function entered when the signal was raised, for the failure message

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and (_ours(frame) or _ours(frame.f_back)):
            if self.calls == self.at:
                self.in_finaliser = frame.f_code.co_name == "__del__" or bool(
                    frame.f_code.co_flags & inspect.CO_GENERATOR
                )
                self.where = f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_qualname}"
                signal.raise_signal(signal.SIGUSR1)  # its handler runs now, in the frame just entered
            self.calls += 1


def _call(explainer: IIAExplainer, x: torch.Tensor, at: int) -> tuple[bool, _InterruptAt]:
    """One ``attribute`` call with the interrupt at call ``at``: ``(interrupted, the tracer)``."""
    tracer = _InterruptAt(at)
    previous_hook = sys.unraisablehook

    def unraisable(report: Any) -> None:
        # The garbage collector may run an unrelated object's finaliser or weakref callback inside the package's
        # frame (so the tracer counts it); CPython prints and drops whatever that callback raises.
        if isinstance(report.exc_value, Interrupted):
            tracer.dropped = True
        else:
            previous_hook(report)

    sys.unraisablehook = unraisable
    sys.settrace(tracer)
    try:
        explainer.attribute(x, 0)
        sys.settrace(None)
        # A signal deferred at the very end is delivered at the next check: give it one here.
        sum(range(3))
    except Interrupted:
        sys.settrace(None)
        return True, tracer
    finally:
        sys.settrace(None)
        sys.unraisablehook = previous_hook
    return False, tracer


@pytest.fixture
def sigusr1():
    previous = signal.signal(signal.SIGUSR1, _raise_interrupt)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MODELS))
def test_interrupt_at_every_call_leaves_the_model_as_found(kind: str, sigusr1: None) -> None:
    model, processor = MODELS[kind]()
    x = pixels(1, size=32)
    options = {"method": METHOD[kind]} if kind in METHOD else {"steps": 1}
    explainer = IIAExplainer(model, processor, progress=False, **options)
    expected = explainer.attribute(x, 0)
    with torch.no_grad():
        logits = explainer.logits(x)
    before = snapshot(model)
    interrupted, counter = _call(explainer, x, at=-1)
    calls = counter.calls
    assert not interrupted and calls > 50
    for at in range(calls):
        interrupted, tracer = _call(explainer, x, at)
        # An exception in a finaliser (tqdm's __del__, a generator closed at garbage collection) is printed and
        # dropped by CPython itself, whatever raised it.
        assert interrupted or tracer.in_finaliser or tracer.dropped, (
            f"the interrupt raised at call {at} of {calls} ({tracer.where}) was lost"
        )
        assert_unchanged(before, snapshot(model))
        assert not explainer._lock.locked(), f"lock left held (interrupt at call {at})"
    with torch.no_grad():
        torch.testing.assert_close(explainer.logits(x), logits, rtol=0, atol=0)
    torch.testing.assert_close(explainer.attribute(x, 0), expected, rtol=0, atol=0)


def test_an_interrupt_during_setup_is_delivered_once_it_is_complete_and_undoes_it(sigusr1: None) -> None:
    """A signal arriving inside the set-up is delivered once the set-up is complete; its exception undoes it all."""
    state: list[str] = []
    seen: list[list[str]] = []

    def setup(installation: Installation) -> None:
        state.append("hook")
        installation.undo(state.clear)
        signal.raise_signal(signal.SIGUSR1)
        state.append("still installing")  # the set-up is not cut short: it is undone as a whole

    def interrupt(signum: int, frame: FrameType | None) -> None:
        seen.append(list(state))
        raise Interrupted

    signal.signal(signal.SIGUSR1, interrupt)
    with pytest.raises(Interrupted), Installation(setup):
        pytest.fail("the body ran on an interrupted set-up")
    assert seen == [["hook", "still installing"]]
    assert state == []
    assert signal.getsignal(signal.SIGUSR1) is interrupt


def test_a_handler_that_returns_during_setup_leaves_the_setup_in_place() -> None:
    """A handler that returns (a timer that counts) is run once, and the body runs on the complete set-up, not
    on an undone one (which would run an explanation without its hooks, or unlocked)."""
    state: list[str] = []
    calls: list[int] = []

    def setup(installation: Installation) -> None:
        state.append("hook")
        installation.undo(state.clear)
        signal.raise_signal(signal.SIGUSR1)
        state.append("lock")

    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    try:
        with Installation(setup):
            assert calls == [signal.SIGUSR1]
            assert state == ["hook", "lock"], "the body ran on an undone set-up"
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert state == [] and calls == [signal.SIGUSR1]


def test_every_deferred_signal_runs_its_handler_when_one_raises(sigusr1: None) -> None:
    """Two signals deferred by one undo: the first handler raises, the second still runs, once."""
    calls: list[int] = []

    def setup(installation: Installation) -> None:
        def undo() -> None:
            signal.raise_signal(signal.SIGUSR1)  # raises Interrupted once delivered
            signal.raise_signal(signal.SIGUSR2)

        installation.undo(undo)

    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with pytest.raises(Interrupted), Installation(setup):
            pass
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [signal.SIGUSR2]


def test_handlers_are_wrapped_only_while_installing_and_undoing(sigusr1: None) -> None:
    """The body of an installation is interruptible as usual, and the user's handlers are restored on exit."""
    with pytest.raises(Interrupted), Installation(lambda installation: None):
        signal.raise_signal(signal.SIGUSR1)
        sum(range(3))
    assert signal.getsignal(signal.SIGUSR1) is _raise_interrupt


def test_an_explanation_in_another_thread_does_not_touch_signal_handlers() -> None:
    """Handlers can only be set from the main thread; a worker thread's installation must not try."""
    model, processor = build_tiny("resnet")
    explainer = IIAExplainer(model, processor, steps=1, progress=False)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            explainer.attribute(pixels(1, size=32), 0)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == []
