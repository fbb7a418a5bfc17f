"""Imported only by the forkserver that worker processes fork from (`local.worker_context`).

The forkserver must die with the driver that started it: its children, the workers, keep it
alive otherwise (each holds the pipe whose end would tell it the driver is gone), and a worker's
own parent-death signal fires when its parent, the forkserver, dies. So the forkserver takes the
same parent-death signal as a spawned worker, and a killed driver still leaves no process behind.
"""

from rltune.tune.executors.local import die_with_parent

die_with_parent()
