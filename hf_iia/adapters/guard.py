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
moment between entering the method and protecting it). A signal deferred during the set-up is delivered once the
set-up is complete, as if it had arrived at the first instant of the ``with`` body; if its handler raises, the
set-up is undone before the exception leaves ``__enter__``, so the body never starts on a half-installed model,
nor on an undone one.

Signals and threads: CPython runs Python-level handlers only in the main thread, and ``signal.signal`` works only
there, so only the main thread wraps handlers, and only the main thread's frames decide whether a signal is
deferred. The deferred signals are therefore the main thread's, and only the main thread delivers them: an
installation in another thread (which no handler can interrupt, so it needs no deferral) never runs, moves or
drops one. Each deferred signal reaches its handler exactly once; a handler that raises does not stop the others
from running (its exception is raised after them).
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
_pending: list[tuple[_Handler, int, FrameType | None]] = []  # the main thread's deferred signals, oldest first
_LOCK_POLL_S = 0.05  # how long a signal deferred while waiting for a lock waits for its delivery, at most


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


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _wrap_handlers(wrapped: list[tuple[int, _Handler]]) -> None:
    """Wrap every Python-level signal handler in a :class:`_Deferring`, recording each in ``wrapped`` as it goes
    (a not yet wrapped handler can still raise mid-way; what was wrapped by then is restored). Off the main thread
    nothing is wrapped: ``signal.signal`` works only there, and no handler can interrupt another thread."""
    if not _on_main_thread():
        return
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(handler) and not isinstance(handler, _Deferring):
            wrapped.append((signum, handler))  # first: restoring a handler that was not yet wrapped is harmless
            signal.signal(signum, _Deferring(handler))


def _deliver(failure: BaseException | None = None) -> None:
    """Run every handler deferred so far, each once, then raise ``failure``, else the first error a handler raised
    (later ones are dropped, as a second Ctrl-C during the first one's handling would be).

    Only the main thread delivers: the deferred signals are its own (handlers run nowhere else), and a handler run
    in another thread would raise there, or be counted there, instead of in the thread that owns it. Signals
    deferred while a handler runs (delivery is still protected code) are delivered by the same loop; each entry is
    taken off the list before its handler runs, so none runs twice or is cleared unrun.
    """
    while _pending and _on_main_thread():
        handler, signum, frame = _pending.pop(0)
        try:
            handler(signum, frame)
        except BaseException as error:
            failure = failure or error
    if failure is not None:
        raise failure


def acquire(installation: Installation, lock: threading.Lock) -> None:
    """Take ``lock`` inside ``installation``'s set-up and register its release.

    The wait is a safe point of the set-up (whatever was taken before is registered for undo): a signal deferred
    while another thread holds the lock is delivered within ``_LOCK_POLL_S``, so Ctrl-C does not wait for the
    other thread's run; if its handler raises, the set-up is undone and the exception leaves the ``with``.
    """
    while not lock.acquire(timeout=_LOCK_POLL_S):
        _deliver()
    installation.undo(lock.release)


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
            _deliver()  # signals deferred during the set-up, now complete (a handler that raises undoes it)
        except BaseException as error:
            # Raises (its argument is set): an undo's failure first, as the model is then not as found (the
            # original error is its context).
            _deliver(self._restore() or error)
        return self

    @protected
    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _deliver(self._restore())

    @protected
    def _restore(self) -> BaseException | None:
        """Undo every change, then put the original handlers back; returns the first error (or, once a handler is
        back, its signal's exception) met on the way, for the caller to raise once the deferred signals ran."""
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
        return failure


def remove_on_undo(installation: Installation, handle: Any) -> None:
    """Register the removal of a hook ``handle`` (a ``torch.utils.hooks.RemovableHandle``)."""
    installation.undo(handle.remove)


__all__ = ["Installation", "acquire", "protected", "remove_on_undo"]
