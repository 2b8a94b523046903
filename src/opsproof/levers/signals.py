"""SIGINT/SIGTERM: put the target back, then stop the run -- whatever the inherited disposition.

`install(cleanup)` registers handlers that run `cleanup()` once (release this run's overrides, resume a
paused replica) and then STOP the run:
- a previous Python handler (pytest's KeyboardInterrupt for SIGINT, the opsproof plugin's SIGTERM
  handler) is called; if it returns instead of raising, `Interrupted` (a KeyboardInterrupt) is raised;
- a previous SIG_IGN (cron, nohup, a `&` background job start with SIGINT ignored) is NOT honoured: the
  levers are already released, so letting the drill go on would have it judge a system it no longer
  controls (e.g. blame a healthy worker for claiming after the kill switch was released). `Interrupted`
  is raised;
- SIG_DFL for SIGINT raises `Interrupted`; SIG_DFL for SIGTERM restores the default and re-delivers the
  signal (the process ends as it would have).
pytest turns `Interrupted` into an interrupted session (exit status 2): the fixture finalizers run (a
no-op by then) and the evidence pack says `interrupted: true`, never green. SIGKILL cannot be caught:
that case is covered by the short leases (see lease.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal after its levers were released."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signame = signal.Signals(signum).name
        super().__init__(f"{self.signame} received: levers released, run interrupted")


class SignalGuard:
    def __init__(self, cleanup: Callable[[], object], *, log: Callable[[str], None] | None = None,
                 on_signal: Callable[[str], object] | None = None) -> None:
        """`cleanup()` releases the levers; `on_signal(signame)`, if given, is called instead of it (it
        must release them too, and may record the interruption)."""
        self.cleanup = cleanup
        self.on_signal = on_signal
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.previous: dict[int, object] = {}
        self.fired: list[int] = []
        self._done = threading.Event()

    @property
    def interrupted(self) -> str | None:
        return signal.Signals(self.fired[0]).name if self.fired else None

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

    def run_cleanup(self, why: str, signame: str | None = None) -> None:
        if self._done.is_set():
            return
        self._done.set()
        try:
            result = self.on_signal(signame) if (self.on_signal and signame) else self.cleanup()
            self.log(f"opsproof: {why}: levers released ({result})")
        except Exception as exc:  # noqa: BLE001 - never mask the signal; the lease still expires
            self.log(f"opsproof: {why}: releasing levers FAILED ({type(exc).__name__}: {exc}); "
                     "the leases expire on their own, then run `opsproof levers release --stale`")

    def _handle(self, signum, frame) -> None:
        self.fired.append(signum)
        name = signal.Signals(signum).name
        self.run_cleanup(f"{name} received", name)
        prev = self.previous.get(signum, signal.SIG_DFL)
        if callable(prev):
            try:
                prev(signum, frame)  # pytest's KeyboardInterrupt, the plugin's SIGTERM handler, ...
            except Interrupted:
                raise
            except KeyboardInterrupt as exc:
                raise Interrupted(signum) from exc  # the same stop, naming the signal
            raise Interrupted(signum)  # it returned: the run must stop all the same
        if prev == signal.SIG_DFL and signum != signal.SIGINT:
            self.uninstall()  # default action: end the process as it would have ended
            os.kill(os.getpid(), signum)
            return
        if prev == signal.SIG_IGN:
            self.log(f"opsproof: {name} was inherited as ignored; stopping the run anyway "
                     "(its levers were just released)")
        raise Interrupted(signum)
