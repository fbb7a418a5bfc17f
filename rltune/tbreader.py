"""Read scalars from TensorBoard event files, without TensorFlow.

An event file is a sequence of TFRecord records::

    uint64 length | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)

(all little-endian), and each record's data is a serialized ``Event`` proto. We parse the protos
with the classes shipped in ``tensorboardX.proto``.

Two kinds of scalar are understood:

* ``Summary.Value.simple_value`` (tensorboardX, TF1 ``tf.summary.scalar``);
* a ``Summary.Value.tensor`` holding one float / double / half (TF2 ``tf.summary.scalar``),
  decoded from ``float_val`` / ``double_val`` / ``half_val`` or from ``tensor_content``.
  Tensors whose summary metadata names a plugin other than ``scalars`` are ignored.

Integrity: both CRCs of every record are checked with a small table-driven CRC-32C written in
pure Python (records holding scalars are tens of bytes, so speed is not a concern). A record cut
short at the end of a file (the writer is still writing it) is not an error: `read_scalars` stops
there and `ScalarTail` picks the record up on a later poll. A record whose data CRC is wrong is
skipped with a warning; a record whose *length* CRC is wrong means the framing can no longer be
trusted, so the rest of that file is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

__all__ = ["read_scalars", "ScalarTail", "crc32c", "masked_crc32c"]

log = logging.getLogger(__name__)

Scalar = tuple[int, str, float]  # (step, tag, value)

_HEADER = 12  # uint64 length + uint32 length crc
_FOOTER = 4  # uint32 data crc
_EVENT_MARK = "tfevents"

# ---------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78
# ---------------------------------------------------------------------------------------------


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of `data` (``crc32c(b"123456789") == 0xE3069283``)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC stored in TFRecord files."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Record framing
# ---------------------------------------------------------------------------------------------


class _CorruptFile(Exception):
    """The length header of a record failed its CRC: nothing after it can be located."""


def _split_records(buf: bytes, name: str) -> tuple[list[bytes], int]:
    """Complete records in `buf` and the number of bytes they span (the rest is a partial record).

    Raises _CorruptFile (carrying the records read before it in ``args[1]``) on a bad length CRC.
    """
    records: list[bytes] = []
    pos = 0
    end = len(buf)
    while end - pos >= _HEADER:
        header = buf[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", buf[pos + 8 : pos + 12])
        if masked_crc32c(header) != length_crc:
            raise _CorruptFile(f"{name}: bad length checksum at byte {pos}", records, pos)
        if end - pos < _HEADER + length + _FOOTER:
            break  # partial record: the writer has not finished it yet
        data = buf[pos + _HEADER : pos + _HEADER + length]
        (data_crc,) = struct.unpack("<I", buf[pos + _HEADER + length : pos + _HEADER + length + 4])
        if masked_crc32c(data) == data_crc:
            records.append(data)
        else:
            log.warning("%s: bad data checksum in record at byte %d; record skipped", name, pos)
        pos += _HEADER + length + _FOOTER
    return records, pos


# ---------------------------------------------------------------------------------------------
# Event decoding
# ---------------------------------------------------------------------------------------------

_DT_FLOAT, _DT_DOUBLE, _DT_HALF = 1, 2, 19  # tensorflow DataType enum values
_CONTENT_FORMAT = {_DT_FLOAT: "<f", _DT_DOUBLE: "<d", _DT_HALF: "<e"}


def _tensor_scalar(tensor) -> float | None:
    """The single float held by a TensorProto, or None if it holds something else."""
    fmt = _CONTENT_FORMAT.get(tensor.dtype)
    if fmt is None:
        return None
    if tensor.tensor_content:
        if len(tensor.tensor_content) != struct.calcsize(fmt):
            return None
        return float(struct.unpack(fmt, tensor.tensor_content)[0])
    if tensor.dtype == _DT_FLOAT and len(tensor.float_val) == 1:
        return float(tensor.float_val[0])
    if tensor.dtype == _DT_DOUBLE and len(tensor.double_val) == 1:
        return float(tensor.double_val[0])
    if tensor.dtype == _DT_HALF and len(tensor.half_val) == 1:
        return float(struct.unpack("<e", struct.pack("<H", tensor.half_val[0] & 0xFFFF))[0])
    return None


def _event_scalars(data: bytes, tag: str | None) -> list[Scalar]:
    from tensorboardX.proto import event_pb2

    event = event_pb2.Event()
    try:
        event.ParseFromString(data)
    except Exception:  # a record that passed its CRC but is not an Event: not ours to judge
        log.warning("record is not a valid Event proto; skipped")
        return []
    if event.WhichOneof("what") != "summary":
        return []
    out: list[Scalar] = []
    for value in event.summary.value:
        if tag is not None and value.tag != tag:
            continue
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            out.append((int(event.step), value.tag, float(value.simple_value)))
        elif kind == "tensor":
            plugin = value.metadata.plugin_data.plugin_name
            if plugin and plugin != "scalars":
                continue
            number = _tensor_scalar(value.tensor)
            if number is not None:
                out.append((int(event.step), value.tag, number))
    return out


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _event_files(path: Path) -> list[Path]:
    """`path` itself if it is a file, else every event file below it (recursively), sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(Path(root) / f for f in sorted(files) if _EVENT_MARK in f)
    return found


class ScalarTail:
    """Incremental reader of the scalars in an event file, or in every event file under a dir.

    Each `poll()` returns the scalars written since the previous poll. Byte offsets are kept per
    file; new event files appearing under the directory are picked up; a partial last record is
    left for the next poll. A file that was rewritten in place (it shrank, or its first record
    changed: tensorboardX reopens a same-named file with "wb" when a new writer starts within
    the same second) is read again from the start.
    """

    def __init__(self, path_or_dir: str | os.PathLike, tag: str | None = None):
        self.path = Path(path_or_dir)
        self.tag = tag
        self._offsets: dict[Path, int] = {}
        self._heads: dict[Path, bytes] = {}  # each file's first record, to notice rewrites
        self._dead: set[Path] = set()  # files whose framing broke (until rewritten)

    def poll(self) -> list[Scalar]:
        out: list[Scalar] = []
        for file in _event_files(self.path):
            out.extend(self._read_new(file))
        return out

    def _forget(self, file: Path) -> None:
        self._offsets.pop(file, None)
        self._heads.pop(file, None)
        self._dead.discard(file)

    def _read_new(self, file: Path) -> list[Scalar]:
        try:
            with open(file, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = self._heads.get(file)
                if head is not None and (size < len(head) or f.read(len(head)) != head):
                    log.info("%s was rewritten; reading it again from the start", file)
                    self._forget(file)
                elif size < self._offsets.get(file, 0):
                    self._forget(file)
                if file in self._dead:
                    return []
                offset = self._offsets.get(file, 0)
                if size - offset < _HEADER:
                    return []
                f.seek(offset)
                buf = f.read()
        except FileNotFoundError:
            self._forget(file)
            return []
        try:
            records, used = _split_records(buf, str(file))
        except _CorruptFile as err:
            log.warning("%s; the rest of this file is ignored", err.args[0])
            self._dead.add(file)
            records, used = err.args[1], err.args[2]
        if offset == 0 and used > 0:
            first = _HEADER + struct.unpack("<Q", buf[:8])[0] + _FOOTER
            self._heads[file] = buf[:first]
        self._offsets[file] = offset + used
        out: list[Scalar] = []
        for data in records:
            out.extend(_event_scalars(data, self.tag))
        return out


def read_scalars(logdir_or_file: str | os.PathLike, tag: str | None = None) -> list[Scalar]:
    """All scalars ``(step, tag, value)`` in an event file, or in every event file under a dir.

    Files are read in sorted path order (event file names start with their creation time), and
    records in file order. `tag` keeps only that tag. Values are Python floats (a `simple_value`
    is float32, so compare with ``numpy.float32(x)``). A truncated last record is ignored.
    """
    return ScalarTail(logdir_or_file, tag=tag).poll()
