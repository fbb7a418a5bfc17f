"""Imported only by the forkserver that worker processes fork from (`local.worker_context`),
first of its preloaded modules.

Ctrl-C is the driver's: the forkserver ignores SIGINT from the start (its own `main` would only
after the preload), and its children, the workers, start with SIGINT ignored too. And it must
die with the driver that started it: its children keep it alive otherwise (each holds the pipe
whose end would tell it the driver is gone), while a worker's parent-death signal fires when
its parent, the forkserver, dies. So it takes a spawned worker's parent-death signal, and a
killed driver still leaves no process behind.

It also sets up jaxlib's LAPACK function table (from scipy, ~0.12 s of CPU), which the on-policy
agents' init needs (orthogonal weights: a QR) and which JAX would otherwise set up in every
worker, on its first compile or its first program loaded from the executable cache.
"""

import os
import signal

from rltune.tune.executors.local import FORKSERVER_PARENT, die_with_parent

signal.signal(signal.SIGINT, signal.SIG_IGN)
die_with_parent(int(os.environ.get(FORKSERVER_PARENT, "0")) or None)
try:
    from rltune.executable_cache import prepare_custom_calls

    prepare_custom_calls(["lapack_"])
except Exception:  # noqa: BLE001 - an optimization (a JAX without these names): workers set it up themselves
    pass
