"""Small helpers shared by the tests that start real processes."""

from __future__ import annotations

import time
from pathlib import Path


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.1) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return False


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that is gone counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
