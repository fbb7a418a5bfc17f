"""TensorBoard event files written in the calling thread.

tensorboardX's SummaryWriter hands every event to a background thread through a
`multiprocessing.Queue` of 10 (a feeder thread, pickling, a pipe) and fsyncs as it flushes.
A trial logs a dozen scalars per segment and a population worker runs 16-32 trials at once:
two threads per trial, and a writer that blocks whenever its thread falls 10 events behind
(0.7 ms of CPU per segment's scalars, most of it handoffs). `EventFile` writes the same events
at once: tensorboardX's scalar summaries (built here for plain numbers, the same protos), in a
file named and begun as tensorboardX's `EventsWriter` names and begins one, TFRecord framing
with tensorboardX's checksum, through a buffered file flushed after every write, one system
call per segment's scalars (no fsync: metrics.jsonl has none either), so a worker that
exits or is killed loses nothing written, and a live TensorBoard sees every segment.
"""

from __future__ import annotations

import atexit
import math
import os
import socket
import struct
import time
import weakref
from typing import Any, Iterable

_open: weakref.WeakSet = weakref.WeakSet()  # closed at exit, as tensorboardX closes its writers


@atexit.register
def _close_all() -> None:
    for events in list(_open):
        events.close()


_LENGTH_CRC: dict[int, bytes] = {}  # record length -> its header (length + masked CRC)
_TAGS: dict[str, str] = {}  # tag -> tensorboardX's cleaned tag


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    from tensorboardX.record_writer import masked_crc32c

    header = _LENGTH_CRC.get(len(data))
    if header is None:
        length = struct.pack("Q", len(data))
        header = _LENGTH_CRC[len(data)] = length + struct.pack("I", masked_crc32c(length))
    return header + data + struct.pack("I", masked_crc32c(data))


def scalar_summary(tag: str, value: Any):
    """tensorboardX's `summary.scalar(tag, value)`, without its numpy round trip for a plain
    finite number (NaN and infinities go through it: it warns about them)."""
    from tensorboardX.proto.summary_pb2 import Summary

    if type(value) in (float, int) and math.isfinite(value):
        clean = _TAGS.get(tag)
        if clean is None:
            from tensorboardX.summary import _clean_tag

            clean = _TAGS[tag] = _clean_tag(tag)
        return Summary(value=[Summary.Value(tag=clean, simple_value=float(value))])
    from tensorboardX.summary import scalar

    return scalar(tag, value)


class EventFile:
    """One run's event file in `logdir` (created on the first event, as SummaryWriter's is)."""

    def __init__(self, logdir: str):
        self.logdir = str(logdir)
        self._file = None
        self._closed = False

    def add_summary(self, summary, step: int | None = None) -> None:
        """A `Summary` proto as one event at `step` (None: no step), stamped now."""
        self._write([summary], step)

    def add_scalar(self, tag: str, value: Any, step: int) -> None:
        self._write([scalar_summary(tag, value)], step)

    def add_scalars(self, items: Iterable[tuple[str, Any]], step: int) -> None:
        """One event per (tag, value), as that many `add_scalar` calls write them."""
        self._write([scalar_summary(tag, value) for tag, value in items], step)

    def _write(self, summaries: list, step: int | None) -> None:
        from tensorboardX.proto.event_pb2 import Event

        if self._closed or not summaries:
            return
        if self._file is None:
            self._open_file()
        records = []
        for summary in summaries:
            event = Event(summary=summary, wall_time=time.time())
            if step is not None:
                event.step = int(step)
            records.append(_record(event.SerializeToString()))
        self._file.write(b"".join(records))
        self._file.flush()  # nothing lost if the worker exits now; a live TensorBoard sees it

    def _open_file(self) -> None:
        from tensorboardX.proto.event_pb2 import Event

        os.makedirs(self.logdir, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{str(now)[:10]}.{socket.gethostname()}"
        self._file = open(os.path.join(self.logdir, name), "wb")  # noqa: SIM115 - closed in close()
        _open.add(self)
        self._file.write(_record(Event(wall_time=now, file_version="brain.Event:2").SerializeToString()))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _open.discard(self)
            if self._file is not None:
                self._file.close()
