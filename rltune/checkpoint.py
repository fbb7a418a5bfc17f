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
    write(path, {
        "format": FORMAT,
        "agent": agent,
        "config": config,
        # one device_get for the whole state (its copies overlap), not one transfer per array
        "state": jax.tree.map(np.asarray, jax.device_get(serialization.to_state_dict(state))),
        "extra": extra or {},
    })


def write(path: str | Path, payload: dict) -> None:
    """Write a payload as `read` returns it (PBT copies one member's to another), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    for key, kind in (("agent", str), ("config", dict), ("state", dict), ("extra", dict)):
        if not isinstance(payload.get(key), kind):
            raise UsageError("checkpoint", f"{path} has no valid {key!r} entry (a damaged or crafted file)")
    return payload


def _shape(leaf: Any) -> tuple[int, ...]:
    shape = getattr(leaf, "shape", None)  # arrays and jax.ShapeDtypeStruct
    return tuple(shape) if shape is not None else np.shape(leaf)


def check_tree(expected: Any, got: Any, where: str = "state") -> None:
    """Raise UsageError naming the first entry where `got` (a checkpoint's state dict) differs
    from `expected` (the state dict the config makes) in keys or array shapes. A crafted or
    mismatched checkpoint is refused here, instead of failing deep inside a compiled step."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            raise UsageError("checkpoint", f"{where} should be a mapping, got {type(got).__name__}")
        for key in expected:
            if key not in got:
                raise UsageError("checkpoint", f"{where}.{key} is missing (not a checkpoint of this agent "
                                 "and config?)")
        for key in got:
            if key not in expected:
                raise UsageError("checkpoint", f"{where}.{key} is not part of this agent's state")
        for key in expected:
            check_tree(expected[key], got[key], f"{where}.{key}")
        return
    if isinstance(got, dict):
        raise UsageError("checkpoint", f"{where} should be an array, got a mapping")
    if _shape(expected) != _shape(got):
        raise UsageError("checkpoint", f"{where} has shape {_shape(got)}, the config needs {_shape(expected)} "
                         "(a checkpoint of another network size or env?)")


def restore_state(template: Any, payload: dict) -> Any:
    """`template` filled with the payload's arrays, after `check_tree` on keys and shapes."""
    check_tree(serialization.to_state_dict(template), payload.get("state"), "state")
    return serialization.from_state_dict(template, payload["state"])


def state_shapes(module: Any, config: Any) -> Any:
    """The agent's initial state as shapes only (`jax.eval_shape`: nothing is computed); a real
    init where tracing is not possible (host environments)."""
    try:
        return jax.eval_shape(lambda: module.init(config))
    except Exception:  # noqa: BLE001 - e.g. an init that needs concrete values
        return module.init(config)


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
