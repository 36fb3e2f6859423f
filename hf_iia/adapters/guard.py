"""Changes to a model that a signal cannot split: hooks, attention switches, train/eval flags.

An explanation changes the model it explains for the length of a call (forward hooks, the attention
implementation, class swaps, train/eval flags) and must leave it as found, also when Ctrl-C or a timer's
handler raises at an arbitrary moment. A ``try``/``finally`` alone does not give that: the exception can land
half-way through installing, or half-way through the ``finally`` that removes, and leave a hook that silently
changes every later forward pass.

:class:`Installation` closes that gap. Its ``__enter__`` runs the whole set-up and its ``__exit__`` the whole
undo, and while either runs, the Python-level handler of every signal (the default Ctrl-C handler included) is
*deferred*: the signal is recorded and its handler runs once the set-up or the undo is complete. Which code is
protected is decided from the interrupted frame and its callers (no flag to set, so there is no unprotected
moment between entering the method and protecting it). An interrupt deferred during the set-up undoes the set-up
before it is delivered, so the ``with`` body never starts on a half-installed model.

Signal handlers run only in the main thread, so a call in another thread needs no deferral; handlers are only
wrapped from the main thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import CodeType, FrameType, TracebackType
from typing import Any, TypeVar

_Handler = Callable[[int, FrameType | None], Any]
_F = TypeVar("_F", bound=Callable[..., Any])

_PROTECTED: set[CodeType] = set()
_pending: list[tuple[_Handler, int, FrameType | None]] = []


def protected(function: _F) -> _F:
    """Mark ``function``: a signal arriving while it (or anything it calls) runs is deferred, provided an
    :class:`Installation` has wrapped the handlers (so: for code that undoes or completes one)."""
    _PROTECTED.add(function.__code__)
    return function


def _in_protected(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code in _PROTECTED:
            return True
        frame = frame.f_back
    return False


class _Deferring:
    """A signal handler that defers ``original`` while protected code runs, and calls it directly otherwise."""

    def __init__(self, original: _Handler) -> None:
        self.original = original

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        if _in_protected(frame):
            _pending.append((self.original, signum, frame))
            return None
        return self.original(signum, frame)


def _wrap_handlers(wrapped: list[tuple[int, _Handler]]) -> None:
    """Wrap every Python-level signal handler in a :class:`_Deferring`, recording each in ``wrapped`` as it goes
    (a not yet wrapped handler can still raise mid-way; what was wrapped by then is restored)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(handler) and not isinstance(handler, _Deferring):
            wrapped.append((signum, handler))  # first: restoring a handler that was not yet wrapped is harmless
            signal.signal(signum, _Deferring(handler))


def _deliver() -> None:
    """Run the handlers deferred so far (the first one that raises ends the delivery; the rest are dropped, as a
    second Ctrl-C during the first one's handling would be)."""
    deferred = list(_pending)
    _pending.clear()
    for handler, signum, frame in deferred:
        handler(signum, frame)


class Installation:
    """Context manager: ``setup(installation)`` on entry, every undo it registered on exit, neither interruptible.

    ``setup`` makes its changes and registers, right after each, the callable that undoes it
    (:meth:`undo`); undos run in reverse order on every exit path.
    """

    def __init__(self, setup: Callable[[Installation], object]) -> None:
        self._setup = setup
        self._undos: list[Callable[[], object]] = []
        self._handlers: list[tuple[int, _Handler]] = []

    def undo(self, callback: Callable[[], object]) -> None:
        """Register ``callback`` to undo the change just made."""
        self._undos.append(callback)

    @protected
    def __enter__(self) -> Installation:
        try:
            _wrap_handlers(self._handlers)
            self._setup(self)
        except BaseException:
            self._restore()
            raise
        if _pending:  # interrupted during the set-up: undo it, then deliver the interrupt
            self._restore()
            _deliver()
        return self

    @protected
    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._restore()
        _deliver()

    @protected
    def _restore(self) -> None:
        """Undo every change, then put the original handlers back; an error (or, once a handler is back, its
        signal) is raised after everything is restored."""
        failure: BaseException | None = None
        while self._undos:
            try:
                self._undos.pop()()
            except BaseException as error:  # keep undoing: one failed removal must not leave the others
                failure = failure or error
        for signum, handler in reversed(self._handlers):
            for _ in range(3):  # a handler put back already may raise during this call: retry (a third error is real)
                try:
                    signal.signal(signum, handler)
                    break
                except BaseException as error:
                    failure = failure or error
        self._handlers.clear()
        if failure is not None:
            raise failure


def remove_on_undo(installation: Installation, handle: Any) -> None:
    """Register the removal of a hook ``handle`` (a ``torch.utils.hooks.RemovableHandle``)."""
    installation.undo(handle.remove)


__all__ = ["Installation", "protected", "remove_on_undo"]
