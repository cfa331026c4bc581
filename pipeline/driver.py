"""Which process drives a run, and whether it is still alive, for ``autospace status``.

``status.json`` is written by the run itself, so a run that was killed (SIGKILL, a
reboot, a lost node) leaves it saying "trials running 2" forever. The driving CLI
process records itself there (:func:`driver_record`); :func:`driver_alive` checks
that record: the same host, a process with that pid, and the same process (on
Linux its start time since boot and the boot id, so a reused pid or a reboot is
not mistaken for the run). No Ray or MLflow here: ``status`` answers instantly.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

__all__ = ["driver_alive", "driver_record"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _process_start(pid: int) -> str | None:
    """A Linux process's identity beyond its pid: boot id and start time in clock ticks; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = _BOOT_ID.read_text().strip()
    except OSError:
        return None
    # Field 22 (starttime) counted after the ")" that ends the command name, which may hold spaces.
    return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"


def driver_record() -> dict[str, Any]:
    """This process as a run's driver: host, pid and (on Linux) start identity."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def driver_alive(record: Any) -> bool | None:
    """Whether the recorded driver still runs: None when that cannot be told (another host, no record)."""
    if not (isinstance(record, dict) and isinstance(record.get("pid"), int) and isinstance(record.get("host"), str)):
        return None
    if record["host"] != socket.gethostname():
        return None
    pid = record["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process holds the pid: alive, but is it ours?
        pass
    start = record.get("start")
    return start is None or _process_start(pid) in (None, start)
