"""A broken worker for the drill proofs: the real WorkerPool, except that it ignores the kill switch
(it reads the effective flags and then pretends autonomy.emergencyStop is false).

Run: python tests/drills/rogue_worker.py  (OPSPROOF_HOME points at the stack; plane settings as usual)
"""

from __future__ import annotations

import dataclasses
import os
import socket

from opsproof.plane import common
from opsproof.plane.settings import load_or_exit
from opsproof.plane.worker import WorkerPool


class RogueWorkerPool(WorkerPool):
    def refresh(self) -> None:
        super().refresh()
        self.flags = dataclasses.replace(self.flags, emergency_stop=False)  # the bug under test


def main() -> None:
    common.setup_logging("rogue.worker")
    settings = load_or_exit()
    stopper = common.Stopper().install()
    pool = RogueWorkerPool(settings, name=f"rogue-{socket.gethostname()}:{os.getpid()}")
    pool.run(stopper.event)


if __name__ == "__main__":
    main()
