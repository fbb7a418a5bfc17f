"""Reading TensorBoard event files without TensorFlow (rltune.tbreader)."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2, summary_pb2, tensor_pb2

from rltune.tbreader import ScalarTail, crc32c, masked_crc32c, read_scalars


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


def _tensor_event(step: int, tag: str, tensor: tensor_pb2.TensorProto, plugin="scalars") -> bytes:
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    if plugin:
        value.metadata.plugin_data.plugin_name = plugin
    event = event_pb2.Event(wall_time=time.time(), step=step,
                            summary=summary_pb2.Summary(value=[value]))
    return event.SerializeToString()


def _write_events(tmp_path, values, tag="loss"):
    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("other", 1.0, 0)
    for step, v in values:
        writer.add_scalar(tag, v, step)
    writer.close()
    (file,) = [p for p in tmp_path.iterdir() if "tfevents" in p.name]
    return file


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 test vector


def test_reads_back_what_tensorboardx_wrote(tmp_path):
    values = [(0, 0.1), (5, -2.5), (10, 1e-7), (15, 123456.789)]
    _write_events(tmp_path, values)
    got = read_scalars(tmp_path, tag="loss")
    assert got == [(s, "loss", float(np.float32(v))) for s, v in values]
    every = read_scalars(tmp_path)
    assert ("other" in {t for _, t, _ in every}) and len(every) == len(values) + 1


def test_truncated_last_record_is_ignored(tmp_path):
    file = _write_events(tmp_path, [(1, 1.0), (2, 2.0), (3, 3.0)])
    data = file.read_bytes()
    for cut in (3, 10, 20):  # inside the data crc, the data, the header
        file.write_bytes(data[:-cut])
        assert read_scalars(file, tag="loss") == [(1, "loss", 1.0), (2, "loss", 2.0)]


def test_corrupt_data_record_is_skipped(tmp_path):
    good = _record(_tensor_event(1, "m", tensor_pb2.TensorProto(dtype=1, float_val=[1.0])))
    bad = bytearray(_record(_tensor_event(2, "m", tensor_pb2.TensorProto(dtype=1, float_val=[2.0]))))
    bad[14] ^= 0xFF  # a byte of the data
    tail = _record(_tensor_event(3, "m", tensor_pb2.TensorProto(dtype=1, float_val=[3.0])))
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(good + bytes(bad) + tail)
    assert [s for s, _, _ in read_scalars(path)] == [1, 3]


def test_tensor_encoded_scalars(tmp_path):
    """TF2 `tf.summary.scalar` writes a scalar tensor; all three encodings are read."""
    records = [
        _tensor_event(1, "r", tensor_pb2.TensorProto(dtype=1, float_val=[0.25])),  # DT_FLOAT
        _tensor_event(2, "r", tensor_pb2.TensorProto(dtype=2, double_val=[0.1])),  # DT_DOUBLE
        _tensor_event(3, "r", tensor_pb2.TensorProto(dtype=2, tensor_content=struct.pack("<d", -7.125))),
        _tensor_event(4, "r", tensor_pb2.TensorProto(dtype=1, tensor_content=struct.pack("<f", 3.5))),
        # not scalars: a string tensor, another plugin's float, a 2-element tensor
        _tensor_event(5, "r", tensor_pb2.TensorProto(dtype=7, string_val=[b"x"])),
        _tensor_event(6, "r", tensor_pb2.TensorProto(dtype=1, float_val=[9.0]), plugin="hparams"),
        _tensor_event(7, "r", tensor_pb2.TensorProto(dtype=1, float_val=[1.0, 2.0])),
    ]
    version = event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString()
    path = tmp_path / "events.out.tfevents.123.host.v2"
    path.write_bytes(b"".join(_record(r) for r in [version, *records]))
    assert read_scalars(path, tag="r") == [(1, "r", 0.25), (2, "r", 0.1), (3, "r", -7.125), (4, "r", 3.5)]


def test_tail_picks_up_appends_partial_records_and_new_files(tmp_path):
    path = tmp_path / "run1" / "events.out.tfevents.1.host"
    path.parent.mkdir()
    recs = [_record(_tensor_event(s, "m", tensor_pb2.TensorProto(dtype=2, double_val=[s / 2])))
            for s in range(4)]
    tail = ScalarTail(tmp_path, tag="m")
    assert tail.poll() == []
    path.write_bytes(recs[0] + recs[1][:7])  # a partial header
    assert tail.poll() == [(0, "m", 0.0)]
    with open(path, "ab") as f:
        f.write(recs[1][7:] + recs[2][:-2])  # the rest of rec 1, most of rec 2
    assert tail.poll() == [(1, "m", 0.5)]
    with open(path, "ab") as f:
        f.write(recs[2][-2:])
    assert tail.poll() == [(2, "m", 1.0)]
    assert tail.poll() == []
    other = tmp_path / "run2" / "events.out.tfevents.2.host"
    other.parent.mkdir()
    other.write_bytes(recs[3])
    assert tail.poll() == [(3, "m", 1.5)]


def test_bad_length_checksum_stops_reading_that_file(tmp_path, caplog):
    rec = _record(_tensor_event(1, "m", tensor_pb2.TensorProto(dtype=1, float_val=[1.0])))
    broken = bytearray(rec)
    broken[8] ^= 0x01
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(rec + bytes(broken) + rec)
    assert [s for s, _, _ in read_scalars(path)] == [1]
    assert "bad length checksum" in caplog.text


@pytest.mark.parametrize("missing", ["nope", "nope/events.out.tfevents.1"])
def test_missing_paths_read_as_empty(tmp_path, missing):
    assert read_scalars(tmp_path / missing) == []


def test_tail_rereads_a_file_rewritten_in_place(tmp_path):
    """tensorboardX reopens a same-named file with "wb" when a new writer starts in the same second."""
    path = tmp_path / "events.out.tfevents.1.host"
    rec = lambda s, v: _record(_tensor_event(s, "m", tensor_pb2.TensorProto(dtype=2, double_val=[v])))
    path.write_bytes(rec(1, 1.0) + rec(2, 2.0))
    tail = ScalarTail(tmp_path, tag="m")
    assert [s for s, _, _ in tail.poll()] == [1, 2]
    path.write_bytes(rec(1, 5.0) + rec(2, 6.0) + rec(3, 7.0))  # longer than before
    assert tail.poll() == [(1, "m", 5.0), (2, "m", 6.0), (3, "m", 7.0)]
    path.write_bytes(b"")
    assert tail.poll() == []
    path.write_bytes(rec(4, 8.0))
    assert tail.poll() == [(4, "m", 8.0)]
