"""Checkpoints as msgpack (flax.serialization): data only, so loading one cannot run code.

A checkpoint file holds {format, agent, config (plain dict), env_steps, state (nested dict of
arrays)}. Restoring builds a template state with the agent's `init` and fills it, so every
array is checked against the expected structure.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from rltune.errors import UsageError

FORMAT = "rltune-checkpoint-v1"
FILE_NAME = {"last": "last.msgpack", "best": "best.msgpack"}


def save(path: str | Path, *, agent: str, config: dict, state: Any, extra: dict | None = None) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "agent": agent,
        "config": config,
        "state": jax.tree.map(np.asarray, serialization.to_state_dict(state)),
        "extra": extra or {},
    }
    data = serialization.msgpack_serialize(payload)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".msgpack")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: str | Path) -> dict:
    """Read the raw payload (msgpack data only: no code can run)."""
    path = Path(path)
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except OSError as exc:
        raise UsageError("checkpoint", f"cannot read {path}: {exc.strerror}") from None
    except Exception as exc:  # malformed bytes
        raise UsageError("checkpoint", f"{path} is not an rltune checkpoint ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError("checkpoint", f"{path} is not an rltune checkpoint (format {FORMAT})")
    return payload


def restore_state(template: Any, payload: dict) -> Any:
    return serialization.from_state_dict(template, payload["state"])


def find(path: str | Path, which: str = "best") -> Path:
    """Accept a checkpoint file, a run directory or a trial directory."""
    path = Path(path)
    if path.is_file():
        return path
    for candidate in (path / "checkpoints" / FILE_NAME[which], path / "checkpoints" / FILE_NAME["last"],
                      path / FILE_NAME[which]):
        if candidate.is_file():
            return candidate
    raise UsageError("path", f"no checkpoint found at {path} (expected a .msgpack file or a run "
                     "directory with checkpoints/)")
