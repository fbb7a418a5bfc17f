"""Worker processes fork from a forkserver that imported rltune's worker modules ahead of need."""

import subprocess
import sys
import textwrap

import pytest

from rltune.tune.executors import local

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the forkserver is used on Linux")


def _run(code: str, tmp_path=None) -> list[str]:
    """`code` in a fresh interpreter (the forkserver is one per process: this one's may be stale),
    as a script file when `tmp_path` is given (its functions are then importable by the workers)."""
    if tmp_path is None:
        argv = [sys.executable, "-c", textwrap.dedent(code)]
    else:
        (tmp_path / "script.py").write_text(textwrap.dedent(code))
        argv = [sys.executable, str(tmp_path / "script.py")]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout.split()


def test_the_preloaded_modules_start_no_jax_backend_and_no_thread():
    # Forking is safe only from a process without XLA's threads: importing must not start them.
    modules = [m for m in local.WORKER_MODULES if not m.endswith("forkserver_preload")]
    assert _run(f"""
        import threading
        for m in {modules!r}:
            __import__(m)
        from rltune.executable_cache import prepare_custom_calls
        prepare_custom_calls(["lapack_"])  # the forkserver's own setup
        from jax._src import xla_bridge
        print(bool(xla_bridge._backends), threading.active_count())
    """) == ["False", "1"]


CHILD = """
    import os, sys
    from rltune.tune.executors import local

    def child(queue, environ):
        preloaded = "rltune.runner" in sys.modules  # imported by the forkserver before the fork
        local.apply_environment(environ)
        queue.put((preloaded, os.environ.get("RLTUNE_TEST_MARK"), os.getppid()))

    if __name__ == "__main__":
        local.start_forkserver()
        os.environ["RLTUNE_TEST_MARK"] = "set after the forkserver started"
        {change}
        ctx, _ = local.worker_context()
        print(ctx.get_start_method())
        queue = ctx.Queue()
        proc = ctx.Process(target=child, args=(queue, dict(os.environ)))
        proc.start()
        preloaded, mark, parent = queue.get(timeout=60)
        proc.join(timeout=30)
        print(preloaded, mark == "set after the forkserver started", parent == os.getpid(), proc.exitcode)
"""


def test_a_worker_forks_preloaded_and_gets_the_drivers_environment_of_now(tmp_path):
    assert _run(CHILD.replace("{change}", "pass"), tmp_path) == ["forkserver", "True", "True", "False", "0"]  # the forkserver is its parent


def test_a_changed_import_time_variable_spawns_instead(tmp_path):
    # read when JAX is imported: the forkserver's value is stale, so the worker is spawned
    assert _run(CHILD.replace("{change}", 'os.environ["JAX_RLTUNE_TEST_FLAG"] = "1"'), tmp_path) == \
        ["spawn", "False", "True", "True", "0"]
