"""One run dir, one writer: a live run holds a lock on its run dir, and every process checks that it joined the
process group its launcher announced.

Two launches into one run dir (a second `python train.py` with the same run name, or a multi-node launch whose
machines never met and so each became a rank 0 of its own) used to finish side by side, interleaving metrics.jsonl
and overwriting each other's checkpoints. Now global rank 0 takes an exclusive `flock` on `<run_dir>/.lock` for the
whole run and writes its pid, host and world size there; a second writer stops with one line that names them.

The kernel drops a `flock` when its process dies, however it dies, so a lock left by a run killed with `kill -9` is
stale by construction: the next run takes it over and `resume=auto` continues as before. (On a shared filesystem the
lock is as good as the filesystem's `flock`: NFSv4 and Lustre with `flock` mounted honour it across machines.)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from lookahead.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class RunDirLock:
    """An exclusive lock on a run dir for the life of a run (`with RunDirLock(run_dir, world_size):`)."""

    def __init__(self, run_dir: Path, world_size: int = 1):
        self.path = Path(run_dir) / LOCK_FILE
        self.world_size = world_size
        self._file: IO[str] | None = None

    def acquire(self) -> RunDirLock:
        import fcntl

        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = describe_holder(handle.read())
            handle.close()
            raise ConfigError(
                f"{self.path.parent} is in use by a live run ({holder}); wait for it, stop it, or give this run "
                "another run_name (or hydra.run.dir)"
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            log.info("Taking over the run dir lock of a run that has ended (%s)", describe_holder(previous))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(self.holder()) + "\n")
        handle.flush()
        self._file = handle
        return self

    def holder(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "world_size": self.world_size, "since": time.time()}

    def release(self) -> None:
        if self._file is None:
            return
        import fcntl

        self._file.seek(0)
        self._file.truncate()
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_run_dir(state: Any, run_dir: Path) -> RunDirLock | None:
    """Rank 0 takes the run dir's lock; every rank learns whether it did, so a refused launch stops all of them
    instead of leaving the others waiting at the next barrier. Returns the lock on rank 0, None elsewhere."""
    error, lock = None, None
    if state.is_main_process:
        try:
            lock = RunDirLock(run_dir, state.num_processes).acquire()
        except ConfigError as e:
            error = str(e)
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error], from_process=0)[0]
    if error:
        raise ConfigError(error)
    return lock


def describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        return f"pid {holder['pid']} on {holder['host']}, {holder['world_size']} process(es), since {started}"
    except (ValueError, KeyError, TypeError):
        return "its holder is not recorded"


def check_process_group(state: Any, environ: Mapping[str, str] | None = None) -> None:
    """Stop when this process is not the rank its launcher announced: `WORLD_SIZE` / `RANK` / `LOCAL_RANK` in the
    environment against the group it joined. A launch whose machines never met gives each a group of its own."""
    env = os.environ if environ is None else environ
    announced = {
        "WORLD_SIZE": (env.get("WORLD_SIZE"), state.num_processes),
        "RANK": (env.get("RANK"), state.process_index),
        "LOCAL_RANK": (env.get("LOCAL_RANK"), state.local_process_index),
    }
    wrong = {k: (want, got) for k, (want, got) in announced.items() if want not in (None, "") and int(want) != got}
    if wrong:
        found = ", ".join(f"{k}={want} announced, {got} joined" for k, (want, got) in wrong.items())
        raise ConfigError(
            f"this process is not part of the process group its launcher announced ({found}): check the machine "
            "count, ranks and main address of every machine of the launch"
        )
