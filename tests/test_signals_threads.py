"""Signals and threads: an explanation in a worker thread never runs, moves or swallows the main thread's signals.

CPython runs Python-level signal handlers only in the main thread. While the main thread installs or undoes
something (:class:`hf_iia.adapters.guard.Installation`) its handlers are deferred; those deferred signals are the
main thread's and are delivered there, exactly once each, whatever a worker thread is installing meanwhile. The
signals here are sent one at a time, each only once the previous one was handled, so the kernel never coalesces
two and the number sent is the number the handler must count.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

import pytest
import torch

from hf_iia import IIAExplainer
from hf_iia.adapters.guard import Installation
from hf_iia.testing import assert_unchanged, build_tiny, hook_count, pixels, snapshot

SIGNALS = 30
PATIENCE_S = 5.0  # a bound on the wait for one signal's handler (reached only when a signal is lost)


class Interrupted(KeyboardInterrupt):
    """The test's interrupt (a KeyboardInterrupt, as Ctrl-C's default handler raises)."""


class Recorder:
    """A signal handler that counts its calls and records the thread each ran in."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.threads.append(threading.current_thread())


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def _wait_until_main_waits_for_the_lock(main: int) -> None:
    """Return once the main thread is taking the model's lock (deferring its signals, while the worker holds it),
    or after PATIENCE_S: a signal sent then is one the worker's installations could wrongly deliver."""
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main)
        while frame is not None and frame.f_code.co_name != "_take":
            frame = frame.f_back
        if frame is not None:
            return
        time.sleep(0.0005)


@pytest.fixture
def handlers() -> Iterator[Callable[[int, Callable[[int, FrameType | None], object]], None]]:
    """``set(signum, handler)``: install a handler for the test; every one is put back afterwards."""
    previous: dict[int, object] = {}

    def set_handler(signum: int, handler: Callable[[int, FrameType | None], object]) -> None:
        previous.setdefault(signum, signal.getsignal(signum))
        signal.signal(signum, handler)

    yield set_handler
    signal.setitimer(signal.ITIMER_REAL, 0)
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]


def test_a_worker_installation_does_not_deliver_the_main_threads_deferred_signal(handlers) -> None:
    """A signal deferred while the main thread installs stays the main thread's, whatever a worker installs."""
    recorder = Recorder()
    handlers(signal.SIGUSR1, recorder)

    def worker() -> None:
        with Installation(lambda installation: None):
            pass

    def setup(installation: Installation) -> None:
        signal.raise_signal(signal.SIGUSR1)  # deferred: the main thread is installing
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert recorder.threads == [], "the main thread's deferred signal was delivered during its set-up"

    with Installation(setup):
        assert recorder.threads == [threading.main_thread()]
    assert recorder.threads == [threading.main_thread()]


def _send_alarm(main: int) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0.001)  # one-shot: exactly one SIGALRM


def _send_usr1(main: int) -> None:
    signal.pthread_kill(main, signal.SIGUSR1)


@pytest.mark.parametrize(
    ("signum", "send"), [(signal.SIGALRM, _send_alarm), (signal.SIGUSR1, _send_usr1)], ids=["setitimer", "pthread_kill"]
)
def test_signals_during_a_worker_run_reach_the_main_thread_once_each(
    handlers, signum: int, send: Callable[[int], None]
) -> None:
    """A worker explains in a loop while the main thread, explaining the same model (so it waits on the model's
    lock, with its handlers deferred), receives signals: each is handled exactly once, in the main thread."""
    model, processor = build_tiny("resnet")
    worker_explainer = IIAExplainer(model, processor, steps=1, progress=False)
    main_explainer = IIAExplainer(model, processor, steps=1, progress=False)
    x = pixels(1, size=32)
    expected = worker_explainer.attribute(x, 0)
    before = snapshot(model)
    recorder = Recorder()
    handlers(signum, recorder)
    sent = threading.Event()
    errors: list[BaseException] = []
    main = threading.main_thread().ident
    assert main is not None

    def sender() -> None:
        for count in range(1, SIGNALS + 1):
            _wait_until_main_waits_for_the_lock(main)
            send(main)
            deadline = time.monotonic() + PATIENCE_S
            while len(recorder.threads) < count and time.monotonic() < deadline:
                time.sleep(0.001)
        sent.set()

    def worker() -> None:
        try:
            while not sent.is_set():
                torch.testing.assert_close(worker_explainer.attribute(x, 0), expected)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker), threading.Thread(target=sender)]
    for thread in threads:
        thread.start()
    while not sent.is_set():
        main_explainer.attribute(x, 0)
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(recorder.threads) == SIGNALS, f"{len(recorder.threads)} of {SIGNALS} signals were handled"
    assert set(recorder.threads) == {threading.main_thread()}, "a handler ran outside the main thread"
    assert_unchanged(before, snapshot(model))
    assert not worker_explainer._lock.locked()


def test_a_keyboard_interrupt_reaches_the_main_thread_and_not_the_worker(handlers) -> None:
    """Ctrl-C's handler raising in the main thread while a worker explains: the main thread gets the interrupt,
    the worker carries on untouched, and the model is left as found."""
    model, processor = build_tiny("resnet")
    worker_explainer = IIAExplainer(model, processor, steps=1, progress=False)
    main_explainer = IIAExplainer(model, processor, steps=1, progress=False)
    x = pixels(1, size=32)
    expected = worker_explainer.attribute(x, 0)
    before = snapshot(model)
    handlers(signal.SIGUSR1, _raise_interrupt)
    stop, running = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    main = threading.main_thread().ident
    assert main is not None

    def worker() -> None:
        try:
            for _ in range(300):  # a bound, should the main thread never be interrupted
                torch.testing.assert_close(worker_explainer.attribute(x, 0), expected)
                running.set()
                if stop.is_set():
                    break
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def sender() -> None:
        running.wait(PATIENCE_S)
        _wait_until_main_waits_for_the_lock(main)
        signal.pthread_kill(main, signal.SIGUSR1)

    threads = [threading.Thread(target=worker), threading.Thread(target=sender)]
    try:
        for thread in threads:
            thread.start()
        with pytest.raises(Interrupted):
            for _ in range(300):
                main_explainer.attribute(x, 0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert_unchanged(before, snapshot(model))
    assert not main_explainer._lock.locked()
    torch.testing.assert_close(main_explainer.attribute(x, 0), expected)


def test_building_an_explainer_waits_for_a_run_on_a_model_sharing_its_modules() -> None:
    """Building an explainer probes its model (hooks, eval mode): it must wait for another thread's run on a
    model sharing modules with it, or the probe's undo puts back the flags it found mid-run (eval) after the run
    restored its own (train), leaving the other model's shared modules in eval mode."""
    model_a, processor = build_tiny("efficientnet", seed=0)
    model_b, _ = build_tiny("efficientnet", seed=1)
    model_b.efficientnet = model_a.efficientnet  # two classifiers over one backbone
    model_a.train()
    model_b.train()
    explainer_a = IIAExplainer(model_a, processor, steps=1, progress=False)
    a_running, b_probing, a_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def rendezvous(module: torch.nn.Module, args: object) -> None:
        # The first forward of each thread through the shared backbone meets the other thread's (bounded waits:
        # once the probe waits for the run, as it must, the run's wait just runs out).
        name = threading.current_thread().name
        if name == "run" and not a_running.is_set():
            a_running.set()
            b_probing.wait(1.0)
        elif name == "build" and not b_probing.is_set():
            b_probing.set()
            a_done.wait(PATIENCE_S)

    handle = model_a.efficientnet.register_forward_pre_hook(rendezvous)
    before_a, before_b = snapshot(model_a), snapshot(model_b)

    def run() -> None:
        try:
            explainer_a.attribute(pixels(1, size=32), 0)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def build() -> None:
        try:
            IIAExplainer(model_b, processor, steps=1, progress=False)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    runner, builder = threading.Thread(target=run, name="run"), threading.Thread(target=build, name="build")
    runner.start()
    a_running.wait(PATIENCE_S)
    builder.start()
    runner.join()
    a_done.set()
    builder.join()
    after_a, after_b = snapshot(model_a), snapshot(model_b)  # the rendezvous hook still on, as before
    handle.remove()
    assert after_a["training"] == before_a["training"], "the probe left the shared modules' train/eval flags changed"
    assert_unchanged(before_a, after_a)
    assert_unchanged(before_b, after_b)
    assert hook_count(model_a) == hook_count(model_b) == 0
    assert errors == []


def test_ctrl_c_while_waiting_for_another_threads_run_is_not_held_back(handlers) -> None:
    """The main thread waiting for the model's lock (another thread's run holds it) gets Ctrl-C while it waits,
    not once that run ends, and leaves the lock to its holder."""
    model, processor = build_tiny("resnet")
    explainer = IIAExplainer(model, processor, steps=1, progress=False)
    handlers(signal.SIGUSR1, _raise_interrupt)
    held, release = threading.Event(), threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def holder() -> None:
        with explainer._lock:  # what another thread's run holds
            held.set()
            release.wait(PATIENCE_S)

    def sender() -> None:
        _wait_until_main_waits_for_the_lock(main)
        signal.pthread_kill(main, signal.SIGUSR1)

    threads = [threading.Thread(target=holder), threading.Thread(target=sender)]
    threads[0].start()
    held.wait(PATIENCE_S)
    threads[1].start()
    try:
        with pytest.raises(Interrupted):
            explainer.attribute(pixels(1, size=32), 0)
        assert threads[0].is_alive(), "the interrupt was held back until the other run released the lock"
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert not explainer._lock.locked()
