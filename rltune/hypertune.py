"""Report a tuning metric the way the Cloud ML `hypertune` helper does, and read such reports.

Trainers written for the managed tuning service do::

    import hypertune
    hypertune.HyperTune().report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag="reward", metric_value=r, global_step=step)

and can import ``rltune.hypertune`` instead (no other dependency). Each report appends one JSON
line to the file named by ``$CLOUD_ML_HP_METRIC_FILE`` (default ``/tmp/hypertune/output.metrics``)::

    {"reward": 12.5, "global_step": 200, "timestamp": 1700000000.1, "trial": "7"}

The readers here also accept files written by the original helper, which stores numbers as
strings and rewrites the whole file (its last 100 reports) on every report.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

__all__ = ["HyperTune", "read_metric_file", "MetricTail", "DEFAULT_METRIC_FILE", "DEFAULT_TAG"]

log = logging.getLogger(__name__)

DEFAULT_METRIC_FILE = "/tmp/hypertune/output.metrics"
DEFAULT_TAG = "training/hptuning/metric"


def _trial_id_from_env() -> str:
    trial = os.environ.get("CLOUD_ML_TRIAL_ID")
    if trial:
        return trial
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
        return str(task.get("trial", ""))
    except (ValueError, AttributeError):
        return ""


class HyperTune:
    """Drop-in for ``hypertune.HyperTune``: appends metric reports to the metric file."""

    def __init__(self, metric_file: str | os.PathLike | None = None):
        self.metric_path = Path(
            metric_file or os.environ.get("CLOUD_ML_HP_METRIC_FILE") or DEFAULT_METRIC_FILE
        )
        self.metric_path.parent.mkdir(parents=True, exist_ok=True)
        self.trial_id = _trial_id_from_env()
        self._reports = 0

    def report_hyperparameter_tuning_metric(
        self,
        hyperparameter_metric_tag: str,
        metric_value: float,
        global_step: int | None = None,
        checkpoint_path: str = "",
    ) -> None:
        """Append ``{tag: value, "global_step": n, "timestamp": t, "trial": id}``.

        `global_step` None means "the number of reports made so far by this object" (0, 1, ...),
        so that successive reports stay distinguishable. An empty tag means the service's
        default tag ``training/hptuning/metric``. NaN / inf are written as JSON ``NaN`` /
        ``Infinity`` (the tuner treats them as a failed trial).
        """
        tag = hyperparameter_metric_tag or DEFAULT_TAG
        step = self._reports if global_step is None else int(global_step)
        body = {tag: float(metric_value), "global_step": step, "timestamp": time.time(),
                "trial": self.trial_id}
        if checkpoint_path:
            body["checkpoint_path"] = str(checkpoint_path)
        line = json.dumps(body) + "\n"
        with open(self.metric_path, "a", encoding="utf-8") as f:
            f.write(line)  # one write per line keeps a concurrent reader's partial line short
            f.flush()
        self._reports += 1


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _parse_line(line: str, tag: str) -> tuple[int, float, float | None] | None:
    """(step, value, timestamp) from one JSON line, or None if it does not report `tag`."""
    line = line.strip()
    if not line:
        return None
    try:
        body = json.loads(line)
    except ValueError:
        log.warning("unreadable hypertune line skipped: %.80s", line)
        return None
    if not isinstance(body, dict) or tag not in body:
        return None
    try:
        value = float(body[tag])  # the original helper writes numbers as strings
        step = int(float(body.get("global_step", 0) or 0))
    except (TypeError, ValueError):
        log.warning("hypertune line with a non-numeric value skipped: %.80s", line)
        return None
    stamp = body.get("timestamp")
    try:
        stamp = float(stamp) if stamp is not None else None
    except (TypeError, ValueError):
        stamp = None
    return step, value, stamp


class MetricTail:
    """Incremental reader of one tag in a hypertune metric file.

    Each `poll()` returns the ``(step, value)`` reports added since the previous poll. A partial
    last line (being written) is left for the next poll. If the file was rewritten rather than
    appended to (it shrank, or its first line changed, as the original helper does), it is read
    again from the start and only reports newer than the last one returned are kept (by
    timestamp).
    """

    def __init__(self, path: str | os.PathLike, tag: str):
        self.path = Path(path)
        self.tag = tag
        self._offset = 0
        self._head = b""  # the first complete line, to notice rewrites
        self._last_stamp: float | None = None

    def poll(self) -> list[tuple[int, float]]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                rewritten = size < self._offset
                if not rewritten and self._head:
                    rewritten = f.read(len(self._head)) != self._head
                since_stamp = None
                if rewritten:
                    self._offset, self._head = 0, b""
                    since_stamp = self._last_stamp
                f.seek(self._offset)
                buf = f.read()
        except FileNotFoundError:
            return []
        end = buf.rfind(b"\n") + 1  # complete lines only
        if end == 0:
            return []
        if self._offset == 0:
            self._head = buf[: buf.find(b"\n") + 1]
        self._offset += end
        out: list[tuple[int, float]] = []
        for raw in buf[:end].decode("utf-8", errors="replace").splitlines():
            parsed = _parse_line(raw, self.tag)
            if parsed is None:
                continue
            step, value, stamp = parsed
            if since_stamp is not None and stamp is not None and stamp <= since_stamp:
                continue  # already returned before the rewrite
            if stamp is not None:
                self._last_stamp = stamp if self._last_stamp is None else max(self._last_stamp, stamp)
            out.append((step, value))
        return out


def read_metric_file(path: str | os.PathLike, tag: str) -> list[tuple[int, float]]:
    """All ``(step, value)`` reports of `tag` in a hypertune metric file, in file order.

    Lines for other tags and blank or malformed lines are skipped. A last line without its
    newline is kept if it is complete JSON, and silently dropped if not (being written).
    """
    tail = MetricTail(path, tag)
    out = tail.poll()
    try:
        with open(tail.path, "rb") as f:
            f.seek(tail._offset)
            rest = f.read().decode("utf-8", errors="replace").strip()
    except FileNotFoundError:
        return out
    if rest:
        try:
            json.loads(rest)
        except ValueError:
            return out  # a partial line
        parsed = _parse_line(rest, tag)
        if parsed is not None:
            out.append(parsed[:2])
    return out
