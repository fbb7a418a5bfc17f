"""The Ray executor: trials in long-lived Ray actors, on a local Ray or a cluster.

Each actor runs the local executor's worker loop (`local.worker_main`, or `population_main`
for a vmapped population shard) in a thread, so it imports JAX once and reuses compiled
programs across trials. The driver long-polls every actor for worker messages.

Trial files: an actor writes a trial's files into a node-local directory, never into the
driver's study directory, and ships the changed ones back with each message of the trial
(every report, i.e. every scheduler boundary, and its end), so every file ends up in the
driver's study directory even when the nodes share no filesystem. A trial resumed elsewhere
(a paused trial that won its rung, or a trial whose node died) gets its directory shipped to
the new actor first.

Faults: when an actor dies (its node removed, the process killed), each of its trials is
started again on another actor, from its last shipped checkpoint for a built-in agent, from
scratch for an external trainer, up to `max_failures` times; the trial's record lists each
restart. A replacement actor is created and takes work once the cluster can place it.

Ray is imported only in this module (`pip install "rltune[ray]"`). A local Ray started here
binds to 127.0.0.1 only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from rltune.errors import UsageError
from rltune.tune.executors.base import (Done, Event, ExecutorOptions, Failed, Retried, TrialTask,
                                        event_from_message)

RAY_INSTALL = 'pip install "rltune[ray]"'
POLL_SECONDS = 0.5  # an actor answers a poll as soon as it has a message, or after this
SYNC_SECONDS = 1.0  # how often a running trial's changed files are shipped to the driver


def check_ray_available() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("executor", f"executor ray needs Ray, which is not installed: {RAY_INSTALL}") from None


def use_loopback() -> None:
    """Ray 2.x picks the machine's interface address by default (and its GCS listens on every
    interface); this makes a Ray started from this process use and bind 127.0.0.1 only. Ray
    reads the variable once, when it is first imported, into `ray_constants.ENABLE_RAY_CLUSTER`:
    where Ray was imported already (by a user's code, or our availability check) that constant is
    set too, else the variable alone would come too late."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


# ---------------------------------------------------------------- trial files
def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (mtime, size)} of the finished files under `root` (not temp files being
    written: a checkpoint is written to `.tmp-*` and renamed)."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.name.startswith(".tmp-") and not path.name.endswith(".part"):
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size)
    return out


def read_files(root: Path, names) -> dict[str, bytes]:
    out = {}
    for name in names:
        try:
            out[name] = (root / name).read_bytes()
        except FileNotFoundError:  # removed between the scan and the read
            pass
    return out


def write_files(root: Path, files: dict[str, bytes]) -> None:
    root = root.resolve()
    for name, data in files.items():
        path = (root / name).resolve()
        if root not in path.parents:  # names come from our own actors; still, never outside root
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)


class _TrialActor:
    """The actor body (wrapped by `ray.remote` in `_actor_class`)."""

    def __init__(self, actor_id: int, capacity: int, population: bool):
        import ray

        from rltune.tune.executors.local import worker_main
        from rltune.tune.executors.population import population_main

        self.node = ray.get_runtime_context().get_node_id()
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.workdir = Path(tempfile.mkdtemp(prefix="rltune-actor-"))  # node-local
        self.shipped: dict[int, dict[str, tuple[int, int]]] = {}  # running trial -> files the driver has
        self.lock = threading.Lock()  # poll and submit may run at once (a threaded actor)
        self.last_sync = time.monotonic()
        if population:
            target, args = population_main, (actor_id, self.inbox, self.outbox, capacity, self.node, False)
        else:
            target, args = worker_main, (actor_id, self.inbox, self.outbox, self.node, False)
        self.thread = threading.Thread(target=target, args=args, daemon=True, name="rltune-worker")
        self.thread.start()

    def ready(self) -> tuple[str, int]:
        return self.node, os.getpid()

    def submit(self, task: TrialTask, files: dict[str, bytes]) -> None:
        local = self.workdir / str(task.trial_id)
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
        write_files(local, files)
        with self.lock:
            self.shipped[task.trial_id] = snapshot(local)  # the driver has these already
        self.inbox.put(dataclasses.replace(task, trial_dir=str(local)))

    def decide(self, trial_id: int, decision: str) -> None:
        self.inbox.put(("decision", trial_id, decision))

    def poll(self, timeout: float) -> tuple[list[tuple], dict[int, dict[str, bytes]]]:
        """Worker messages (waiting up to `timeout` for the first) and changed trial files: those
        of every trial with a message, and of every running trial at most every SYNC_SECONDS
        (its checkpoints after each segment, so a trial can continue elsewhere if this node dies)."""
        messages = []
        try:
            messages.append(self.outbox.get(timeout=timeout))
            while True:
                messages.append(self.outbox.get_nowait())
        except queue.Empty:
            pass
        with self.lock:
            files = {}
            now = time.monotonic()
            for msg in messages:
                kind, trial_id = msg[0], msg[2]
                if kind in ("report", "done", "failed"):
                    # merged: a trial that no longer waits for decisions can send several
                    # messages in one batch, each shipping only what changed since the previous
                    files.setdefault(trial_id, {}).update(self._changed(trial_id))
                if kind in ("done", "failed"):
                    self.shipped.pop(trial_id, None)
                    shutil.rmtree(self.workdir / str(trial_id), ignore_errors=True)
            if now - self.last_sync >= SYNC_SECONDS:
                self.last_sync = now
                for trial_id in list(self.shipped):
                    if trial_id not in files:
                        files[trial_id] = self._changed(trial_id)
        return messages, {k: v for k, v in files.items() if v}

    def _changed(self, trial_id: int) -> dict[str, bytes]:
        local = self.workdir / str(trial_id)
        now = snapshot(local) if local.exists() else {}
        before = self.shipped.get(trial_id, {})
        changed = [name for name, sig in now.items() if before.get(name) != sig]
        self.shipped[trial_id] = now
        return read_files(local, changed)

    def kill_trainers(self) -> None:
        """Kill the process groups of this actor's external trainers (before the actor is killed:
        a trainer runs in its own session and would outlive it)."""
        from rltune.tune.external import kill_trial_trainer

        for trial_dir in self.workdir.glob("*"):
            kill_trial_trainer(trial_dir, grace_period=1.0)

    def stop(self) -> dict:
        """Stop the worker; its profile table (`rltune.profile`), for the driver to merge."""
        from rltune import profile

        self.inbox.put(None)
        self.thread.join(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return dict(profile.LAST, role="ray-worker") if profile.LAST else {}


@dataclasses.dataclass
class _Actor:
    handle: object
    capacity: int
    ready_ref: object = None  # set until the cluster has placed and started it
    poll_ref: object = None
    node: str | None = None
    trials: set = dataclasses.field(default_factory=set)

    @property
    def free(self) -> int:
        return 0 if self.ready_ref is not None else self.capacity - len(self.trials)


def _kill_actor(actor: _Actor) -> None:
    import ray

    if actor.ready_ref is None and actor.trials:
        try:
            ray.get(actor.handle.kill_trainers.remote(), timeout=10)
        except Exception:  # the actor is already gone, or hung: nothing more to do from here  # noqa: BLE001
            pass
    ray.kill(actor.handle)


class RayExecutor:
    def __init__(self, options: ExecutorOptions):
        check_ray_available()
        self.options = options
        self.num_actors = max(1, options.parallel)
        if options.population:
            from rltune.tune.executors.population import auto_population_size

            self.capacity = options.population_size or auto_population_size(
                options.agent, options.agent_config, -(-options.num_trials // self.num_actors))
        else:
            self.capacity = 1
        self.cpus = float(options.resources.get("cpu", 1))
        self.gpus = float(options.resources.get("gpu", 0))
        self.actors: dict[int, _Actor] = {}
        self._next_actor = 0
        self._started_ray = False
        self._tasks: dict[int, TrialTask] = {}  # running trials (driver-side paths)
        self._trial_actor: dict[int, int] = {}
        self._attempts: dict[int, int] = {}
        self._retry: list[TrialTask] = []  # trials waiting for a slot after their actor died
        self._events: list[Event] = []

    # ------------------------------------------------------------ cluster and actors
    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            if self.options.address is None:
                use_loopback()
                # Logical CPUs: `parallel` actors run on this machine, as local workers would.
                num_cpus = max(os.cpu_count() or 1, math.ceil(self.num_actors * self.cpus))
                with warnings.catch_warnings():  # Ray forks then execs its daemons: safe with JAX loaded
                    warnings.filterwarnings("ignore", message="os.fork")
                    # address="local": a new Ray of our own, even where another runs on this machine
                    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                             _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=self.options.address, log_to_driver=False, configure_logging=False)
            self._started_ray = True
        self._actor_cls = ray.remote(_TrialActor).options(num_cpus=self.cpus, num_gpus=self.gpus,
                                                           max_concurrency=4)
        for _ in range(self.num_actors):
            self._new_actor()
        self._wait_first_actor()

    def _wait_first_actor(self, timeout: float = 120) -> None:
        """Fail clearly when the cluster cannot place even one actor (resources it lacks)."""
        import ray

        refs = [a.ready_ref for a in self.actors.values()]
        done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if not done:
            raise UsageError("resources", f"the Ray cluster placed no trial actor within {timeout:.0f} s; "
                             f"each needs {self.cpus:g} CPU and {self.gpus:g} GPU: lower `resources:` or add "
                             "nodes")

    def _new_actor(self) -> None:
        aid = self._next_actor
        self._next_actor += 1
        handle = self._actor_cls.remote(aid, self.capacity, self.options.population)
        self.actors[aid] = _Actor(handle, self.capacity, ready_ref=handle.ready.remote())

    # ------------------------------------------------------------ the protocol
    def warm_up(self, hint: TrialTask) -> None:
        """Ignored: Ray's actors never warm up (they may run on other nodes, without a shared
        compile cache): each trial compiles its own programs."""

    def idle_workers(self) -> int:
        return sum(1 for a in self.actors.values() if a.ready_ref is None and not a.trials)

    def free_slots(self) -> int:
        return max(0, sum(a.free for a in self.actors.values()) - len(self._retry))

    def submit(self, task: TrialTask) -> None:
        self._tasks[task.trial_id] = task
        self._place(task)

    def _place(self, task: TrialTask) -> None:
        aid = max((aid for aid, a in self.actors.items() if a.free > 0), key=lambda aid: self.actors[aid].free)
        actor = self.actors[aid]
        files = {}
        if task.resume:  # continue from its checkpoint, possibly on another node
            root = Path(task.trial_dir)
            files = read_files(root, snapshot(root)) if root.exists() else {}
        actor.trials.add(task.trial_id)
        self._trial_actor[task.trial_id] = aid
        actor.handle.submit.remote(task, files)
        if actor.poll_ref is None:
            actor.poll_ref = actor.handle.poll.remote(POLL_SECONDS)

    def decide(self, trial_id: int, decision: str) -> None:
        aid = self._trial_actor.get(trial_id)
        if aid in self.actors:
            self.actors[aid].handle.decide.remote(trial_id, decision)

    def events(self, timeout: float) -> list[Event]:
        import ray

        waiting = {}
        for aid, a in self.actors.items():
            for ref in (a.ready_ref, a.poll_ref):
                if ref is not None:
                    waiting[ref] = aid
        if waiting:
            done, _ = ray.wait(list(waiting), num_returns=1, timeout=timeout)
            if done:
                done, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=0)
            for ref in done:
                self._collect(waiting[ref], ref)
        self._place_retries()
        events, self._events = self._events, []
        return events

    def _collect(self, aid: int, ref) -> None:
        import ray

        actor = self.actors.get(aid)
        if actor is None:
            return
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            self._actor_died(aid, exc)
            return
        if ref is actor.ready_ref:
            actor.ready_ref, actor.node = None, result[0]
            return
        actor.poll_ref = None
        messages, files = result
        for trial_id, trial_files in files.items():
            task = self._tasks.get(trial_id)
            if task is not None:
                write_files(Path(task.trial_dir), trial_files)
        for msg in messages:
            trial_id = msg[2]
            if trial_id not in self._tasks:
                continue
            event = event_from_message(msg)
            if isinstance(event, (Done, Failed)):
                self._forget(trial_id)
            if event is not None:
                self._events.append(event)
        if actor.trials:
            actor.poll_ref = actor.handle.poll.remote(POLL_SECONDS)

    def _forget(self, trial_id: int) -> None:
        self._tasks.pop(trial_id, None)
        aid = self._trial_actor.pop(trial_id, None)
        if aid in self.actors:
            self.actors[aid].trials.discard(trial_id)

    def _actor_died(self, aid: int, exc: Exception) -> None:
        actor = self.actors.pop(aid)
        reason = f"worker lost on node {actor.node or '?'} ({type(exc).__name__})"
        for trial_id in sorted(actor.trials):
            self._trial_actor.pop(trial_id, None)
            task = self._tasks[trial_id]
            attempt = self._attempts.get(trial_id, 0) + 1
            self._attempts[trial_id] = attempt
            if attempt > self.options.max_failures:
                self._tasks.pop(trial_id)
                self._events.append(Failed(trial_id, f"{reason}; gave up after {attempt - 1} restarts"))
                continue
            checkpoint = task.command is None and (Path(task.trial_dir) / "checkpoints" / "last.msgpack").exists()
            self._retry.append(dataclasses.replace(task, resume=checkpoint))
            self._events.append(Retried(trial_id, reason, attempt, from_checkpoint=checkpoint))
        self._new_actor()

    def _place_retries(self) -> None:
        while self._retry and any(a.free > 0 for a in self.actors.values()):
            task = self._retry.pop(0)
            self._tasks[task.trial_id] = task
            self._place(task)

    def kill(self, trial_id: int) -> None:
        """Kill the trial's actor (a hung trial cannot be interrupted otherwise) and replace it."""
        aid = self._trial_actor.pop(trial_id, None)
        self._tasks.pop(trial_id, None)
        actor = self.actors.pop(aid, None) if aid is not None else None
        if actor is None:
            return
        _kill_actor(actor)
        for other in actor.trials - {trial_id}:  # members of a population shard go with it
            self._forget(other)
            self._events.append(Failed(other, "stopped with a timed-out member of its population"))
        self._new_actor()

    @staticmethod
    def _write_profile(ref) -> None:
        """An actor's profile table into the driver's profile directory (`rltune.profile`)."""
        import ray

        from rltune import profile

        try:
            entry = ray.get(ref, timeout=0)
        except Exception:  # an actor that failed to stop has no table: nothing to merge  # noqa: BLE001
            return
        if entry:
            profile.write(entry)

    def shutdown(self, force: bool = False) -> None:
        import ray

        if not ray.is_initialized():
            return
        stops = []
        for actor in self.actors.values():
            if force or actor.ready_ref is not None:
                _kill_actor(actor)
            else:
                stops.append(actor.handle.stop.remote())
        if stops:
            done, _ = ray.wait(stops, num_returns=len(stops), timeout=15)
            for ref in done:
                self._write_profile(ref)
        for actor in self.actors.values():
            ray.kill(actor.handle)
        self.actors.clear()
        if self._started_ray:
            ray.shutdown()
