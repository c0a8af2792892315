"""What keeps a long run from losing work: stop signals, the non-finite loss guard, and their errors.

SIGINT / SIGTERM ask the run to stop at the end of the current optimizer step, save a checkpoint and exit. A second
SIGINT (Ctrl-C pressed again) aborts at once; a repeated SIGTERM does not: under SLURM the job's SIGTERM reaches each
worker twice, once from SLURM and once forwarded by torchrun, and aborting on the second lost the checkpoint that
`#SBATCH --signal=TERM@120` exists to save. (torchrun then waits TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds before
SIGKILL; scripts/slurm/train.sbatch sets it under the warning time.)

Every process checks the same flags at the same step (reduced across processes), so a signal or a NaN seen by one
rank stops all of them together instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by the first SIGINT / SIGTERM; read by the trainer at the end of each optimizer step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # already stopping
            if signum == signal.SIGINT:  # Ctrl-C again: the person at the terminal wants out now
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
                return
            log.warning("%s received again: still saving a checkpoint after this step", signal.Signals(signum).name)
            return
        self.signum = signum
        log.warning("%s received: saving a checkpoint after this step, then stopping (Ctrl-C again aborts)", self.name)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle the stop signals inside the block (main thread only; elsewhere signals keep their handlers)."""
        try:
            previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        except ValueError:  # not the main thread, e.g. a notebook worker: leave the defaults alone
            yield self
            return
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
