"""XLA's CPU thread pool sized per worker (rltune.cpu_threads)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rltune import cpu_threads

ROOT = Path(__file__).resolve().parents[1]


def test_threads_per_worker_splits_the_cores(monkeypatch):
    monkeypatch.delenv(cpu_threads.ENV_THREADS, raising=False)
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: [0, 1])
    assert cpu_threads.threads_per_worker(2) == 1  # two workers fill two cores: one thread each
    assert cpu_threads.threads_per_worker(3) == 1
    assert cpu_threads.threads_per_worker(1) is None  # a lone worker keeps JAX's default
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: list(range(8)))
    assert cpu_threads.threads_per_worker(2) == 4
    monkeypatch.setenv(cpu_threads.ENV_THREADS, "0")
    assert cpu_threads.threads_per_worker(2) is None
    monkeypatch.setenv(cpu_threads.ENV_THREADS, "3")
    assert cpu_threads.threads_per_worker(2) == 3


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and 2 cores")
def test_limit_sizes_the_pool_and_gives_the_affinity_back():
    code = """
import os, collections
from rltune import cpu_threads
full = os.sched_getaffinity(0)
assert cpu_threads.limit(1, first_core=1)
assert not cpu_threads.limit(1)  # JAX has started: too late, nothing done
import jax.numpy as jnp
(jnp.ones((64, 64)) @ jnp.ones((64, 64))).block_until_ready()
tasks = os.listdir('/proc/self/task')
names = collections.Counter(open(f'/proc/self/task/{t}/comm').read().strip() for t in tasks)
assert names['tf_XLAEigen'] == 1, names
assert all(os.sched_getaffinity(int(t)) == full for t in tasks)
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and 2 cores")
def test_limit_leaves_jax_alone_where_its_platforms_exclude_the_cpu():
    # JAX_PLATFORMS=cuda on a GPU machine: asking for the CPU client there raised "Unknown backend
    # cpu" and every worker of a study exited at its start (seen on an H200).
    code = """
from rltune import cpu_threads
assert not cpu_threads.cpu_platform_allowed()
assert not cpu_threads.limit(1)
assert not cpu_threads._backend_started()
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cuda"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    for platforms, allowed in [("cpu", True), ("cuda,cpu", True), ("", True), ("tpu", False)]:
        env["JAX_PLATFORMS"] = platforms
        check = f"from rltune import cpu_threads; assert cpu_threads.cpu_platform_allowed() is {allowed}"
        out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, (platforms, out.stderr[-2000:])


def test_worker_processes_share_an_accelerators_memory(monkeypatch):
    from rltune.tune.executors.local import share_accelerator_memory

    for name in ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE"):
        monkeypatch.delenv(name, raising=False)
    share_accelerator_memory(1)  # alone: JAX's default
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ
    share_accelerator_memory(2)
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.375"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.2")  # the user's setting wins
    share_accelerator_memory(4)
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.2"
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION")
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # no preallocation: nothing to share
    share_accelerator_memory(4)
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ


def test_the_driver_leaves_the_accelerators_memory_to_its_workers(monkeypatch):
    from rltune.tune.executors.local import keep_driver_off_accelerator_memory, share_accelerator_memory

    for name in ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE", "RLTUNE_DRIVER_SET_PREALLOCATE"):
        monkeypatch.delenv(name, raising=False)
    keep_driver_off_accelerator_memory()
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"  # the driver allocates on demand
    share_accelerator_memory(2)  # a worker (it inherited the driver's environment) preallocates its share
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.375"
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION")
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")  # a user's choice is left alone, everywhere
    keep_driver_off_accelerator_memory()
    share_accelerator_memory(2)
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ
