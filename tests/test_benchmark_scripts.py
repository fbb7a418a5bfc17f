"""The benchmark scripts that produced README figures still run (a few steps, no timing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offpolicy_host_loop_profile_runs_the_agents_own_act_and_learn():
    pytest.importorskip("Box2D")
    profile = _script("offpolicy").host_profile("bipedal", 5, "td3")
    # every phase of a learning step was timed, and XLA counted the update's flops
    assert all(profile["cpu"][phase] > 0 for phase in ("act", "env", "learn"))
    assert profile["learn_flops"] > 0 and profile["steps_per_s"] > 0
