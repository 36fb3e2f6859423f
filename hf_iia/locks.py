"""The model lock: one run at a time on the modules of a model, whichever explainer runs it.

Hooks, the attention implementation and train/eval flags are installed on the modules themselves, so two
explainers whose models share any module (one model, or two classifiers over one backbone) must not run at once.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from torch import nn

from .adapters.guard import Installation, acquire, protected

_MODULE_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_MODULE_LOCKS_GUARD = threading.Lock()


class _ModelLock:
    """Holds the lock of every module of a model for the duration of a run.

    The locks are taken in one global order (by ``id``), so two runs can never wait on each other. Taking and
    releasing them is an :class:`~hf_iia.adapters.guard.Installation`: an interrupt cannot leave one held.
    """

    def __init__(self, model: nn.Module) -> None:
        with _MODULE_LOCKS_GUARD:
            modules = sorted({id(module): module for module in model.modules()}.items())
            self._locks = [_MODULE_LOCKS.setdefault(module, threading.Lock()) for _, module in modules]
        self._held = threading.local()  # this thread's open installations (one per nested run)

    def _take(self, installation: Installation) -> None:
        for lock in self._locks:
            acquire(installation, lock)
        stack = self._held.__dict__.setdefault("stack", [])
        stack.append(installation)
        installation.undo(stack.pop)  # an interrupt delivered at the end of the set-up undoes it: no stale entry

    def __enter__(self) -> None:
        Installation(self._take).__enter__()

    @protected
    def __exit__(self, *exc: Any) -> None:
        self._held.stack[-1].__exit__(*exc)  # its undo pops it

    def locked(self) -> bool:
        """Whether any run holds (some of) the locks now."""
        return any(lock.locked() for lock in self._locks)


def model_lock(model: nn.Module) -> _ModelLock:
    """The lock an explainer of ``model`` holds while it runs (see :class:`_ModelLock`)."""
    return _ModelLock(model)
