"""Imported only by the forkserver that worker processes fork from (`local.worker_context`),
first of its preloaded modules.

Ctrl-C is the driver's: the forkserver ignores SIGINT from the start (its own `main` would only
after the preload), and its children, the workers, start with SIGINT ignored too. And it must
die with the driver that started it: its children keep it alive otherwise (each holds the pipe
whose end would tell it the driver is gone), while a worker's parent-death signal fires when
its parent, the forkserver, dies. So it takes a spawned worker's parent-death signal, and a
killed driver still leaves no process behind.
"""

import os
import signal

from rltune.tune.executors.local import FORKSERVER_PARENT, die_with_parent

signal.signal(signal.SIGINT, signal.SIG_IGN)
die_with_parent(int(os.environ.get(FORKSERVER_PARENT, "0")) or None)
