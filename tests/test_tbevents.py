"""rltune.tbevents writes the event file tensorboardX's SummaryWriter writes, in the caller's thread."""

import math
import struct
import threading

from tensorboardX import SummaryWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.summary import hparams

from rltune.tbevents import EventFile


def _events(directory):
    """(file name without its timestamp, events without wall times), checksums verified."""
    from tensorboardX.record_writer import masked_crc32c

    (path,) = directory.glob("events.out.tfevents.*")
    data, events, i = path.read_bytes(), [], 0
    while i < len(data):
        header = data[i:i + 8]
        (length,) = struct.unpack("Q", header)
        assert struct.unpack("I", data[i + 8:i + 12])[0] == masked_crc32c(header)
        body = data[i + 12:i + 12 + length]
        assert struct.unpack("I", data[i + 12 + length:i + 16 + length])[0] == masked_crc32c(body)
        event = Event.FromString(body)
        assert event.wall_time > 0
        event.wall_time = 0
        events.append(event)
        i += 16 + length
    prefix, _, rest = path.name.rpartition("tfevents.")
    return prefix + rest.split(".", 1)[1], events


def test_same_events_as_summary_writer(tmp_path):
    exp, ssi, _ = hparams({"learning_rate": 1e-3, "env": "CartPole-v1", "anneal": True}, {"charts/reward": 0.0})
    scalars = [("charts/reward", 1.5), ("losses/loss", 2), ("charts/x", math.inf), ("charts/y", True),
               ("/charts/bad tag!", 0.25), ("charts/big", 1e300)]
    theirs = SummaryWriter(str(tmp_path / "theirs"))
    theirs._get_file_writer().add_summary(exp)
    theirs._get_file_writer().add_summary(ssi)
    ours = EventFile(str(tmp_path / "ours"))
    ours.add_summary(exp)
    ours.add_summary(ssi)
    for step in (0, 1000):
        for tag, value in scalars:
            theirs.add_scalar(tag, value, step)
        ours.add_scalars(scalars, step)
    ours.add_scalar("charts/eval_return", 500.0, 2000)
    theirs.add_scalar("charts/eval_return", 500.0, 2000)
    theirs.close()
    ours.close()
    assert _events(tmp_path / "ours") == _events(tmp_path / "theirs")
    assert len(_events(tmp_path / "ours")[1]) == 1 + 2 + 2 * len(scalars) + 1  # file version first


def test_no_threads_and_readable_before_close(tmp_path):
    before = threading.active_count()
    events = EventFile(str(tmp_path))
    assert not list(tmp_path.iterdir())  # the file is made by the first event, as SummaryWriter's
    events.add_scalar("charts/reward", 1.0, 10)  # every write is flushed at once
    assert threading.active_count() == before
    _, written = _events(tmp_path)
    assert [(e.step, e.summary.value[0].simple_value) for e in written[1:]] == [(10, 1.0)]
    events.close()
    events.add_scalar("charts/reward", 2.0, 20)  # after close: nothing more is written
    assert len(_events(tmp_path)[1]) == 2
