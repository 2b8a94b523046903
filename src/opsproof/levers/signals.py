"""SIGINT/SIGTERM: put the target back before the process goes.

`install(cleanup)` registers handlers that run `cleanup()` once (release this run's overrides, resume a
paused replica) and then hand the signal on to whatever handler was there before (pytest's
KeyboardInterrupt for SIGINT, the default action for SIGTERM), so Ctrl-C still stops the run and the
fixture finalizers run as usual (releasing again is a no-op). SIGKILL cannot be caught: that case is
covered by the leases (see lease.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

HANDLED = (signal.SIGINT, signal.SIGTERM)


class SignalGuard:
    def __init__(self, cleanup: Callable[[], object], *, log: Callable[[str], None] | None = None) -> None:
        self.cleanup = cleanup
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.previous: dict[int, object] = {}
        self.fired: list[int] = []
        self._done = threading.Event()

    def install(self) -> "SignalGuard":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for sig in HANDLED:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, prev in self.previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self.previous.clear()

    def run_cleanup(self, why: str) -> None:
        if self._done.is_set():
            return
        self._done.set()
        try:
            result = self.cleanup()
            self.log(f"opsproof: {why}: levers released ({result})")
        except Exception as exc:  # noqa: BLE001 - never mask the signal; the lease still expires
            self.log(f"opsproof: {why}: releasing levers FAILED ({type(exc).__name__}: {exc}); "
                     "the leases expire on their own, then run `opsproof levers release --stale`")

    def _handle(self, signum, frame) -> None:
        self.fired.append(signum)
        name = signal.Signals(signum).name
        self.run_cleanup(f"{name} received")
        prev = self.previous.get(signum, signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_IGN:
            return
        else:  # SIG_DFL: restore the default and deliver the signal again
            self.uninstall()
            os.kill(os.getpid(), signum)
