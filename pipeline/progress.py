"""Progress for people and for logs: a live bar on a terminal, one line per event otherwise.

A tqdm bar redraws itself in place, which is right on a terminal and wrong in a
log file (``autospace run > run.log 2>&1``, a CI job, a cron mail), where every
redraw becomes one more copy of the bar. Off a terminal :class:`Progress` prints
one plain line when something changes (count or fields) and nothing otherwise,
so a status polled every two seconds logs only its changes.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """A counter with named fields shown as a tqdm bar (terminal) or as event lines (anything else).

    Args:
        total: the count that means done.
        desc: what is counted, e.g. ``generations``.
        unit: tqdm's unit.
        stream: where to write (default stderr, keeping stdout for tables and JSON).
        enabled: False shows nothing.
    """

    def __init__(self, total: int, desc: str, unit: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled and _is_terminal(self.stream)
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream) if self.live else None
        self._last: tuple[int, dict[str, str]] | None = None
        self._start = time.monotonic()

    def update(self, n: int, **fields: Any) -> None:
        """Set the count to ``n`` with ``fields`` (shown as key=value); off a terminal, a line if anything changed."""
        shown = {k: str(v) for k, v in fields.items()}
        if self._bar is not None:
            self._bar.n = n
            self._bar.set_postfix(shown, refresh=False)  # one redraw per update, not two
            self._bar.refresh()
            return
        if not self.enabled or self._last == (n, shown):
            return
        self._last = (n, shown)
        elapsed = time.monotonic() - self._start
        details = " ".join(f"{k}={v}" for k, v in shown.items())
        print(f"[{_clock(elapsed)}] {self.desc} {n}/{self.total}" + (f"  {details}" if details else ""),
              file=self.stream, flush=True)

    def write(self, line: str) -> None:
        """A message that does not break the bar."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
