"""The local executor: one long-lived worker process per parallel trial.

Workers run one trial at a time. Keeping them alive across trials keeps JAX imported and
compiled programs cached: trials that differ only in traced hyperparameters (learning rate,
gamma, ...) reuse one compile. On Linux they fork from a forkserver that imported JAX and
rltune's worker modules once, ahead of need (`worker_context`: no JAX backend is started
there, so the fork is safe); elsewhere they are spawned. A worker dies with the driver
(parent-death signal), so no worker outlives a killed driver.

Worker-loop messages (plain tuples, they cross processes; `base.event_from_message` types them):
    to the driver:  ("started", wid, trial, pid, node) ("report", wid, trial, step, value, answer)
                    ("done", wid, trial, result) ("failed", wid, trial, reason)
    to the worker:  a TrialTask, ("decision", trial, "continue" | "stop"), ("warmup", task) (before
                    the first task: compile that task's programs, run nothing), or None (exit)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import traceback
from pathlib import Path

from rltune.tune.executors.base import (Done, Event, ExecutorOptions, Failed, TrialTask,
                                        event_from_message, needs_answer)


def detach_from_terminal_signals(parent_pid: int | None = None) -> None:
    """Ctrl-C and SIGTERM are the driver's to handle (it records running trials as interrupted
    and stops us); and when the driver dies, so do we (Linux parent-death signal: SIGTERM, on
    which `run_external_trial` kills a running trainer's process group before we exit)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent_pid)


def die_with_parent(parent_pid: int | None = None) -> None:
    """SIGTERM when our parent dies: the driver that spawned us, or the forkserver we forked
    from, which itself dies with the driver. `parent_pid`: that parent's pid (default: the
    process that started us); None and no multiprocessing parent: nothing to check."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the driver's shutdown path still kills us
        pass
    if parent_pid is None:
        parent = mp.parent_process()
        parent_pid = parent.pid if parent is not None else None
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect: we were re-parented


# ---------------------------------------------------------------- starting worker processes
# What a worker imports before its first task (about 0.7 s of CPU): a forkserver imports it
# once. None of it starts a JAX backend or a Python thread (tests/test_worker_start.py checks;
# numpy's OpenBLAS threads are fork-safe), so forking is safe.
WORKER_MODULES = ["rltune.tune.executors.forkserver_preload",  # first: SIGINT ignored, dies with the driver
                  "rltune.agents", "rltune.runner", "rltune.tune.trial", "rltune.tune.warmup",
                  "rltune.tune.executors.population"]
FORKSERVER_PARENT = "RLTUNE_FORKSERVER_PARENT"  # the driver's pid, for the forkserver's parent check
_forkserver: tuple[int, dict[str, str]] | None = None  # (its pid, what its imports read) as started


def _import_time_env() -> dict[str, str]:
    """The environment variables that importing JAX, flax and rltune reads (their config flags,
    the compile cache's switch and place): a worker forked from the forkserver has them as they
    were when it started. (XLA's are read when the worker's backend starts, after
    `apply_environment`.)"""
    return {k: v for k, v in os.environ.items()
            if k.startswith(("JAX_", "FLAX_", "RLTUNE_COMPILE_CACHE")) or k in ("HOME", "XDG_CACHE_HOME")}


def _running_forkserver() -> int | None:
    """Start the forkserver, or restart it if it died; its pid (None: unknown here)."""
    from multiprocessing import forkserver

    os.environ[FORKSERVER_PARENT] = str(os.getpid())
    try:
        forkserver.ensure_running()  # returns at once; the server imports while we go on
    finally:
        os.environ.pop(FORKSERVER_PARENT, None)
    return getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)


def worker_context():
    """(context, parent pid) for a new worker process. On Linux a forkserver with the worker
    modules imported: a worker is ready in a fraction of a second instead of importing JAX
    itself. Spawned as before on other systems, when the forkserver's pid is unknown, or when
    the variables its imports read have changed since it started (the workers get the
    driver's whole environment either way: `apply_environment`). The forkserver lives as long
    as the driver's process, so a later study in it starts warm too."""
    global _forkserver
    spawn = mp.get_context("spawn"), os.getpid()
    if sys.platform != "linux" or "forkserver" not in mp.get_all_start_methods():
        return spawn
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_MODULES)
    pid = _running_forkserver()
    if pid is None:
        return spawn
    if _forkserver is None or _forkserver[0] != pid:  # (re)started just now, with the environment of now
        _forkserver = (pid, _import_time_env())
    return (ctx, pid) if _forkserver[1] == _import_time_env() else spawn


def start_forkserver() -> None:
    """Start the forkserver now, so it imports while the driver checks the study (which imports
    JAX too, on the other core)."""
    worker_context()


def apply_environment(environ: dict[str, str] | None) -> None:
    """First thing in a worker: the driver's environment as it was when the worker started (a
    forked worker would otherwise have the forkserver's, from before the driver set its own)."""
    if environ is not None and os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)


def start_worker_process(worker_id: int, cpu_threads: int | None, workers: int = 1,
                         parent_pid: int | None = None) -> None:
    """First thing in a worker process, before anything starts JAX: XLA's CPU threads (None:
    one per core; see rltune.cpu_threads) and its share of an accelerator's memory; then the
    signals it must not take (`parent_pid`: see `die_with_parent`)."""
    from rltune import cpu_threads as threads

    share_accelerator_memory(workers)
    threads.limit(cpu_threads, worker_id)
    detach_from_terminal_signals(parent_pid)


PREALLOCATE, MEM_FRACTION = "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION"
_DRIVER_SET_PREALLOCATE = "RLTUNE_DRIVER_SET_PREALLOCATE"  # the driver's own setting, not the user's


def keep_driver_off_accelerator_memory() -> None:
    """JAX takes 75 % of a GPU's memory when its backend starts. The study driver uses JAX for
    small things only (shapes, the best trial's check), so it must not take the memory its
    workers need: it allocates on demand instead. Called before the driver's JAX starts. Its
    workers inherit the environment; `share_accelerator_memory` gives them preallocation back."""
    if PREALLOCATE not in os.environ and MEM_FRACTION not in os.environ:
        os.environ[PREALLOCATE] = "false"
        os.environ[_DRIVER_SET_PREALLOCATE] = "1"


def share_accelerator_memory(workers: int) -> None:
    """In a worker process, before JAX starts: the second of two worker processes on one GPU
    would find too little memory left, so each of `workers` preallocates its share of JAX's
    75 %, unless the user set XLA_PYTHON_CLIENT_MEM_FRACTION (or turned preallocation off)."""
    if os.environ.pop(_DRIVER_SET_PREALLOCATE, None):
        os.environ.pop(PREALLOCATE, None)
    if workers > 1 and PREALLOCATE not in os.environ:
        os.environ.setdefault(MEM_FRACTION, f"{0.75 / workers:.3f}")


def worker_main(worker_id: int, inbox, outbox, node: str = "local", own_process: bool = True,
                cpu_threads: int | None = None, share_compiles: bool = False, workers: int = 1,
                environ: dict[str, str] | None = None, parent_pid: int | None = None) -> None:
    """One trial at a time. `own_process`: a worker process (not a thread in a Ray actor);
    `cpu_threads`: XLA's CPU threads in it (`start_worker_process`); `share_compiles`: split
    compiling a trial's programs with the other workers (rltune.tune.warmup); `workers`: how
    many worker processes share this machine; `environ`: the driver's environment; `parent_pid`:
    the process we must die with (`die_with_parent`)."""
    if own_process:
        apply_environment(environ)
        start_worker_process(worker_id, cpu_threads, workers, parent_pid)
    from rltune import profile
    from rltune.tune.trial import result_message, run_task

    with profile.lifetime("worker", own_process):
        _worker_loop(worker_id, inbox, outbox, node, result_message, run_task, share_compiles)


def _worker_loop(worker_id, inbox, outbox, node, result_message, run_task, share_compiles=False) -> None:
    from rltune.profile import phase
    from rltune.tune import warmup

    while True:
        with phase("wait"):
            task = inbox.get()
        if task is None:
            return
        if isinstance(task, tuple) and task[0] == "warmup":
            # The driver's hint, while it opens the storage: the first trial finds its programs
            # compiled. A lone worker too: it would compile them in its first trial anyway.
            warmup.warm_up_trial(task[1], worker_id)
            continue
        outbox.put(("started", worker_id, task.trial_id, os.getpid(), node))
        Path(task.trial_dir).mkdir(parents=True, exist_ok=True)
        (Path(task.trial_dir) / "pid").write_text(str(os.getpid()))

        last = [0]  # the previous report's step (0: answers asked conservatively after a resume)

        def report(step: int, value: float, _task=task) -> str:
            answer = needs_answer(_task.report_steps, last[0], int(step))
            last[0] = int(step)
            outbox.put(("report", worker_id, _task.trial_id, int(step), float(value), answer))
            if not answer:  # between scheduler boundaries the decision is always "continue"
                return "continue"
            with phase("wait"):
                return inbox.get()[2]  # ("decision", trial_id, "continue" | "stop")

        try:
            if share_compiles:
                warmup.warm_up_trial(task, worker_id)
            result = run_task(task, report)
        except Exception as exc:  # a crashing trial fails alone; the worker lives on
            (Path(task.trial_dir) / "error.txt").write_text(traceback.format_exc())
            outbox.put(("failed", worker_id, task.trial_id, f"{type(exc).__name__}: {exc}"))
            continue
        outbox.put(result_message(worker_id, task.trial_id, result))


def _terminate(proc, grace: float = 3.0) -> None:
    """SIGTERM (the worker cleans up its trainer), then SIGKILL if it is still there."""
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=grace)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=5)


class LocalExecutor:
    """`processes` worker processes of `slots_per_process` slots each."""

    def __init__(self, options: ExecutorOptions, *, processes: int | None = None, slots_per_process: int = 1):
        from rltune.cpu_threads import threads_per_worker

        self.processes = processes or max(1, options.parallel)
        self.slots_per_process = slots_per_process
        # workers that fill the cores run XLA with one thread each (rltune.cpu_threads)
        self.cpu_threads = threads_per_worker(self.processes)
        # several workers on one machine compile each program once between them (tune.warmup)
        self.share_compiles = self.processes > 1
        self._ctx, _ = worker_context()
        self._outbox = None
        self._workers: dict[int, tuple[mp.Process, object]] = {}  # worker id -> (process, inbox)
        self._idle: list[int] = []  # one entry per free slot
        self._trial_worker: dict[int, int] = {}
        self._trial_dirs: dict[int, str] = {}
        self._orphaned: list[Event] = []
        self._next_worker = 0

    # worker processes
    def _target(self, wid: int, inbox, parent_pid: int):
        return worker_main, (wid, inbox, self._outbox, "local", True, self.cpu_threads, self.share_compiles,
                             self.processes, dict(os.environ), parent_pid)

    def _parent_pid(self) -> int:
        """The pid a new worker's parent has: the forkserver's (restarted if it died), or ours."""
        if self._ctx.get_start_method() == "forkserver":
            pid = _running_forkserver()
            if pid is not None:
                return pid
        return os.getpid()

    def start(self) -> None:
        self._outbox = self._ctx.Queue()
        self._ensure_workers()

    def _ensure_workers(self) -> None:
        while len(self._workers) < self.processes:
            wid = self._next_worker
            self._next_worker += 1
            inbox = self._ctx.Queue()
            target, args = self._target(wid, inbox, self._parent_pid())
            proc = self._ctx.Process(target=target, args=args, daemon=True, name=f"rltune-worker-{wid}")
            proc.start()
            self._workers[wid] = (proc, inbox)
            self._idle.extend([wid] * self.slots_per_process)

    # the protocol
    def free_slots(self) -> int:
        return len(self._idle)

    def idle_workers(self) -> int:
        return sum(1 for wid in self._workers if self._idle.count(wid) == self.slots_per_process)

    def warm_up(self, hint: TrialTask) -> None:
        for _, inbox in self._workers.values():
            inbox.put(("warmup", hint))

    def submit(self, task: TrialTask) -> None:
        # the worker with the most free slots (population shards fill evenly; one slot each: the first)
        wid = max(dict.fromkeys(self._idle), key=self._idle.count)
        self._idle.remove(wid)
        self._trial_worker[task.trial_id] = wid
        self._trial_dirs[task.trial_id] = task.trial_dir
        self._workers[wid][1].put(task)

    def events(self, timeout: float) -> list[Event]:
        messages = []
        try:
            messages.append(self._outbox.get(timeout=timeout) if timeout > 0 else self._outbox.get_nowait())
            while True:
                messages.append(self._outbox.get_nowait())
        except queue.Empty:
            pass
        events = []
        for msg in messages:
            event = event_from_message(msg)
            if event is None or event.trial_id not in self._trial_worker:
                continue
            if isinstance(event, (Done, Failed)):
                self._idle.append(self._trial_worker.pop(event.trial_id))
                self._trial_dirs.pop(event.trial_id, None)
            events.append(event)
        events += self._dead_worker_events()
        events, self._orphaned = self._orphaned + events, []
        return events

    def _dead_worker_events(self) -> list[Event]:
        events = []
        for wid, (proc, _) in list(self._workers.items()):
            if proc.is_alive():
                continue
            del self._workers[wid]
            self._idle = [w for w in self._idle if w != wid]
            code = proc.exitcode
            reason = f"worker killed by signal {-code}" if code and code < 0 else f"worker exited ({code})"
            for trial_id, w in list(self._trial_worker.items()):
                if w == wid:
                    del self._trial_worker[trial_id]
                    self._kill_trainer(trial_id)  # a SIGKILLed worker could not do it
                    events.append(Failed(trial_id, reason))
            self._ensure_workers()
        return events

    def decide(self, trial_id: int, decision: str) -> None:
        wid = self._trial_worker.get(trial_id)
        if wid is not None and wid in self._workers:
            self._workers[wid][1].put(("decision", trial_id, decision))

    def _kill_trainer(self, trial_id: int) -> None:
        from rltune.tune.external import kill_trial_trainer

        trial_dir = self._trial_dirs.pop(trial_id, None)
        if trial_dir is not None:
            kill_trial_trainer(trial_dir, grace_period=1.0)

    def kill(self, trial_id: int) -> None:
        """Kill the trial's worker process (its trainer goes with it) and start a fresh one."""
        wid = self._trial_worker.pop(trial_id, None)
        if wid is None or wid not in self._workers:
            return
        proc, _ = self._workers.pop(wid)
        _terminate(proc)
        self._kill_trainer(trial_id)
        self._idle = [w for w in self._idle if w != wid]
        for other, w in list(self._trial_worker.items()):  # members of a population go with it
            if w == wid:
                del self._trial_worker[other]
                self._orphaned.append(Failed(other, "stopped with a timed-out member of its population"))
        self._ensure_workers()

    def shutdown(self, force: bool = False) -> None:
        for proc, inbox in self._workers.values():
            if force:
                if proc.is_alive():  # (an exited worker's pid may already be another process's)
                    proc.terminate()  # SIGTERM: the worker kills its trainer's process group, then exits
            else:
                inbox.put(None)
        for proc, _ in self._workers.values():
            proc.join(timeout=5)
            if proc.is_alive():
                _terminate(proc)
        for trial_id in list(self._trial_dirs):  # trainers of workers that had to be SIGKILLed
            self._kill_trainer(trial_id)
        self._workers.clear()
        self._idle.clear()
