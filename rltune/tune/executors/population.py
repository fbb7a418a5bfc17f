"""The population executor: many trials trained as one vmapped, jit-compiled program.

One worker process holds up to `capacity` members. Members share the static part of their
config (shapes: hidden sizes, num_envs, rollout length, minibatches, epochs, total steps), so
one compiled program serves them all; their traced hyperparameters (learning rate, gamma, GAE
lambda, clip, entropy and value coefficients, max grad norm) are stacked along a member axis.
Each member is still a trial with its own directory, metrics, TensorBoard log and checkpoints,
written by the same TrialRecorder as the local executor.

The worker speaks the local worker's protocol (worker.py), one trial per member: the driver
sees `capacity` slots. At every segment end each member reports; a member the scheduler stops
(or pauses) leaves the population and its slot takes the next trial. A member whose loss turns
NaN fails alone. A trial with a different static shape waits until the population has drained,
then the population is rebuilt for its shape.

Population-based training (`scheduler: pbt`, tasks carry `pbt` settings): the worker waits for
all members, trains them in lockstep, and at every PBT interval (and whenever a member
diverges) asks `PBTScheduler.exploit_explore` who copies whom. A copy is one compiled gather
over the stacked state: the member takes the source's whole state (weights, optimizer moments,
environments, episode statistics) and traced hyperparameters; its random stream becomes the
source's folded with the member's trial number, so the copy explores on its own and a replay
(`hp_schedule`) can draw the same numbers. Each copy is reported as an "exploited" message;
a diverged member is replaced by a copy instead of failing.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rltune.profile import lifetime, phase
from rltune.tune.executors.base import ExecutorOptions, TrialTask, needs_answer
from rltune.tune.executors.local import LocalExecutor, apply_environment, start_worker_process

SEGMENTS_PER_TRIAL = 20


@dataclass
class Member:
    task: TrialTask
    config: Any
    recorder: Any
    slot: int
    report_steps: tuple[int, ...] = ()
    seg_updates: int = 1
    extra: dict = field(default_factory=dict)


@dataclass
class PBTRun:
    """A population-based training run inside one population worker."""

    scheduler: Any  # rltune.schedulers.pbt.PBTScheduler
    names: tuple[str, ...]  # the traced hyperparameters a member's schedule records
    members: int  # trials that start together, in lockstep
    started: bool = False


def make_pbt_run(settings: dict) -> PBTRun:
    from rltune.schedulers import make_scheduler

    scheduler = make_scheduler("pbt", goal=settings["goal"], max_steps=settings["max_steps"],
                               **settings["params"])
    return PBTRun(scheduler, tuple(settings["names"]), int(settings["num_trials"]))


def population_support(agent: str) -> bool:
    from rltune.agents import get_agent

    return hasattr(get_agent(agent), "population_segment")


def member_bytes(agent: str, config) -> int:
    """Rough device memory of one member: its state plus the rollout and minibatch buffers."""
    import jax
    import numpy as np

    from rltune.agents import get_agent

    state = jax.eval_shape(lambda: get_agent(agent).init(config))
    state_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))
    info_obs = int(np.prod(jax.tree.leaves(state.obs)[0].shape[1:])) if hasattr(state, "obs") else 16
    rollout = getattr(config, "batch_size", 1024) * (info_obs + 16) * 4 * 6
    return 3 * state_bytes + rollout


def auto_population_size(agent: str, config, num_trials: int, memory_fraction: float = 0.25) -> int:
    """As many members as trials, bounded by a quarter of the available memory."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = 4 << 30
    by_memory = max(1, int(available * memory_fraction // max(member_bytes(agent, config), 1)))
    return max(1, min(num_trials, by_memory))


class Population:
    """Stacked member states and hyperparameters for one static shape."""

    def __init__(self, agent: str, capacity: int):
        from rltune.agents import get_agent

        self.agent = agent
        self.module = get_agent(agent)
        self.capacity = capacity
        self.key = None  # (static config, env info) of the current members
        self._states = None  # pytree, leading axis = capacity
        self._hps = None
        # A new population's members, stacked on the host as they are admitted and sent to the
        # device in one transfer when the population is first used: no compiled write per member.
        self._host = None
        self.members: dict[int, Member] = {}  # slot -> member
        self.compile_seconds = 0.0  # of the last segment

    @property
    def states(self):
        self._to_device()
        return self._states

    @states.setter
    def states(self, value):
        self._to_device()
        self._states = value

    @property
    def hps(self):
        self._to_device()
        return self._hps

    @hps.setter
    def hps(self, value):
        self._to_device()
        self._hps = value

    def _to_device(self) -> None:
        if self._host is not None:
            import jax

            self._states, self._hps = jax.device_put(self._host)
            self._host = None

    def static_key(self, config):
        from rltune.envs import env_info

        static, _ = self.module.split_config(config)
        return static, env_info(config.env, config.backend)

    def free_slots(self) -> list[int]:
        return [i for i in range(self.capacity) if i not in self.members]

    def admit(self, member: Member, state) -> None:
        import jax
        import numpy as np

        _, hp = self.module.split_config(member.config)
        # Host (numpy) copies: no weak types, so the population program compiles exactly once.
        state, hp = jax.tree.map(np.asarray, jax.device_get((state, hp)))
        if not self.members and (self._states is None or self.key != self.static_key(member.config)):
            self.key = self.static_key(member.config)
            self._states = self._hps = None
            self._host = jax.tree.map(lambda x: np.repeat(x[None], self.capacity, axis=0), (state, hp))
        elif self._host is not None:
            for stacked, x in zip(jax.tree.leaves(self._host), jax.tree.leaves((state, hp))):
                stacked[member.slot] = x
        else:
            self.states, self.hps = _set_slot(self.states, self.hps, member.slot, state, hp)
        self.members[member.slot] = member

    def exploit(self, copies: dict[int, tuple[int, dict[str, float], int]]) -> None:
        """PBT exploit in place: slot -> (source slot, hyperparameters to set, rng fold). The
        slot gets the source's whole state and traced hyperparameters, then `hps` on top; its
        random key is the source's folded with `fold`. Other slots are untouched."""
        import jax
        import numpy as np

        index = np.arange(self.capacity)
        fold = np.zeros(self.capacity, np.uint32)
        folded = np.zeros(self.capacity, bool)
        for slot, (source, _, rng_fold) in copies.items():
            index[slot], fold[slot], folded[slot] = source, rng_fold, True
        hps = {k: np.array(v) for k, v in jax.device_get(self.hps).items()}
        hps = {k: v[index] for k, v in hps.items()}
        for slot, (_, values, _) in copies.items():
            for name, value in values.items():
                hps[name][slot] = value
        self.states = _exploit_jit()(self.states, index, fold, folded)
        self.hps = jax.device_put(hps)

    def step(self) -> tuple[Any, Any, dict[int, int], float]:
        """One segment for every member; returns host copies of states and metrics."""
        import jax
        import jax.numpy as jnp
        import numpy as np

        from rltune.runner import SegmentClock, _next_segment

        updates = np.asarray(jax.device_get(self.states.update))
        n = np.zeros(self.capacity, np.int32)
        for slot, m in self.members.items():
            n[slot] = _next_segment(int(updates[slot]), m.seg_updates, m.config, m.report_steps)
        segment = self.module.population_segment(*self.key)
        clock = SegmentClock()
        with phase("train"):
            self.states, metrics = segment(self.hps, self.states, jnp.asarray(n))
            host_states, host_metrics = jax.device_get((self.states, metrics))
        seconds, self.compile_seconds = clock.stop()  # steps/s leaves the compile out
        return host_states, host_metrics, {s: int(n[s]) for s in self.members}, seconds


def _set_slot(states, hps, slot: int, state, hp):
    return _set_slot_jit()(states, hps, slot, state, hp)


@functools.lru_cache(maxsize=1)
def _set_slot_jit():
    """One compiled program writes a member into its slot (not one per array)."""
    import jax

    def set_slot(states, hps, slot, state, hp):
        put = lambda stacked, x: stacked.at[slot].set(x)  # noqa: E731
        return jax.tree.map(put, states, state), jax.tree.map(put, hps, hp)

    return jax.jit(set_slot, donate_argnums=(0, 1))


@functools.lru_cache(maxsize=1)
def _exploit_jit():
    """One compiled gather copies every exploiting member's state from its source."""
    import jax
    import jax.numpy as jnp

    def exploit(states, index, fold, folded):
        states = jax.tree.map(lambda x: x[index], states)
        if hasattr(states, "rng"):
            new = jax.vmap(jax.random.fold_in)(states.rng, fold)
            mask = folded.reshape((-1,) + (1,) * (states.rng.ndim - 1))
            states = states.replace(rng=jnp.where(mask, new, states.rng))
        return states

    return jax.jit(exploit, donate_argnums=(0,))


def _member(tree, slot: int):
    import jax

    return jax.tree.map(lambda x: x[slot], tree)


def accelerator_installed() -> bool:
    """A JAX GPU/TPU plugin is installed (checked without starting a JAX backend here)."""
    import importlib.util

    return any(importlib.util.find_spec(name) is not None
               for name in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "libtpu"))


def shard_count(options: ExecutorOptions) -> int:
    """Worker processes: one per `parallel` on a CPU (a vmapped program runs on one core, so two
    shards use two); one on an accelerator (one device, and each process would reserve its
    memory) and for PBT, whose members exploit each other across the whole population."""
    if options.pbt or accelerator_installed():
        return 1
    return max(1, min(options.parallel, options.num_trials, os.cpu_count() or 1))


class PopulationExecutor(LocalExecutor):
    """`population_size` slots, split over `shard_count` worker processes (shards)."""

    def __init__(self, options: ExecutorOptions):
        size = options.population_size or auto_population_size(options.agent, options.agent_config,
                                                                options.num_trials)
        shards = min(shard_count(options), size)
        super().__init__(options, processes=shards, slots_per_process=math.ceil(size / shards))

    def _target(self, wid: int, inbox, parent_pid: int):
        return population_main, (wid, inbox, self._outbox, self.slots_per_process, "local", True,
                                 self.cpu_threads, self.share_compiles, self.processes, dict(os.environ),
                                 parent_pid)


def population_main(worker_id: int, inbox, outbox, capacity: int, node: str = "local",
                    own_process: bool = True, cpu_threads: int | None = None,
                    share_compiles: bool = False, workers: int = 1, environ: dict[str, str] | None = None,
                    parent_pid: int | None = None) -> None:
    """Worker entry (a process, or a thread in a Ray actor): run members until told to exit.
    `share_compiles`: split compiling the population's programs with the other shards;
    `workers`: how many shards share this machine; `environ`: the driver's environment;
    `parent_pid`: the process it must die with."""
    if own_process:
        apply_environment(environ)
        start_worker_process(worker_id, cpu_threads, workers, parent_pid)
    with lifetime("population", own_process):
        _population_loop(worker_id, inbox, outbox, capacity, node, share_compiles)


def _population_loop(worker_id: int, inbox, outbox, capacity: int, node: str, share_compiles: bool = False) -> None:
    pending: collections.deque[TrialTask] = collections.deque()
    decisions: dict[int, str] = {}
    population: Population | None = None
    pbt: PBTRun | None = None
    received = [0]  # tasks received so far
    hint: list[TrialTask] = []  # the driver's warm-up hint ("warmup" message), not yet acted on
    warmed = None  # what the hint warmed up (`_warm_key`): the first members need not again

    def receive(block: bool, timeout: float | None = None) -> bool:
        """Move inbox messages into `pending` / `decisions` / `hint` (blocking for the first one,
        at most `timeout` seconds); False when told to exit."""
        import queue

        while True:
            try:
                with phase("wait"):
                    msg = inbox.get(block=block, timeout=timeout)
            except queue.Empty:
                return True
            block = False
            if msg is None:
                return False
            if isinstance(msg, TrialTask):
                pending.append(msg)
                received[0] += 1
            elif msg[0] == "warmup":
                hint.append(msg[1])
            else:
                decisions[msg[1]] = msg[2]

    while True:
        idle = population is None or not population.members
        # PBT members start together: wait until every one of them has arrived.
        gathering = pbt is not None and not pbt.started and received[0] < pbt.members
        if not receive(block=(idle and not pending) or gathering):
            return
        if hint and population is None and not pending:
            # as before its first members (below), while the driver still opens the storage; a
            # lone shard too: it would compile these programs for its first members anyway
            warmed = _warm_up_hint(hint[0], capacity, worker_id)
        hint.clear()
        if population is None and pending:
            population = Population(pending[0].agent, capacity)
            if pending[0].pbt is not None:
                pbt = make_pbt_run(pending[0].pbt)
        if population is None:
            continue
        if pbt is not None and not pbt.started:
            if received[0] < pbt.members:
                continue
            pbt.started = True
        if share_compiles and not population.members and pending:
            from rltune.tune.warmup import warm_up_population

            if warmed is None or warmed != _warm_key(capacity, pending[0]):
                warm_up_population(population, pending[0], worker_id)
            warmed = None
        if pending and not population.members and pbt is None and not _gather_first_members(receive, pending, capacity):
            return
        with phase("setup"):
            _admit_pending(population, pending, worker_id, outbox, node)
        if not population.members:
            continue
        _run_segment(population, worker_id, outbox, decisions, receive, pbt)


# A new population starts once its slots are full, or once the driver has sent no task for this
# long (it submits a study's first tasks a few milliseconds apart).
FIRST_MEMBERS_QUIET_SECONDS = 0.25


def _gather_first_members(receive, pending, capacity: int) -> bool:
    """Before a new population's first segment: take the tasks still arriving (the driver may be
    submitting them while this shard warmed up). A member admitted a segment later would keep
    every slot computing one segment longer at the end. False when told to exit."""
    while len(pending) < capacity:
        before = len(pending)
        if not receive(block=True, timeout=FIRST_MEMBERS_QUIET_SECONDS):
            return False
        if len(pending) == before:  # quiet: no more tasks coming now
            return True
    return True


def _warm_up_hint(task: TrialTask, capacity: int, worker_id: int):
    """Warm up for the driver's hint as for a first member of its config; its `_warm_key`."""
    from rltune.tune.warmup import warm_up_population

    key = _warm_key(capacity, task)
    if key is not None:
        warm_up_population(Population(task.agent, capacity), task, worker_id)
    return key


def _warm_key(capacity: int, task: TrialTask):
    """What a population warm-up for `task` compiles: its static config (shapes, env), members
    and evaluation episodes; None when its config does not read (the trial says why)."""
    from rltune.agents import get_agent
    from rltune.config import from_dict

    try:
        module = get_agent(task.agent)
        static, _ = module.split_config(from_dict(module.Config, task.config, source=f"trial {task.trial_id}"))
    except Exception:  # noqa: BLE001 - reported by the trial itself
        return None
    return task.agent, static, capacity, task.eval_episodes


def _admit_pending(population: Population, pending, worker_id: int, outbox, node: str = "local") -> None:
    from rltune.agents import get_agent
    from rltune.config import from_dict
    from rltune.runner import RunOptions, TrialRecorder, _segment_updates, load_last
    from rltune.tune.results import tb_run_name
    from rltune.tune.trial import CHECKPOINT_INTERVAL

    while pending and population.free_slots():
        task = pending.popleft()
        try:
            module = get_agent(task.agent)
            config = from_dict(module.Config, task.config, source=f"trial {task.trial_id}")
            if population.members and population.static_key(config) != population.key:
                pending.appendleft(task)
                return  # another shape: it waits until this population drains
            slot = population.free_slots()[0]
            outbox.put(("started", worker_id, task.trial_id, os.getpid(), node))
            Path(task.trial_dir).mkdir(parents=True, exist_ok=True)
            (Path(task.trial_dir) / "pid").write_text(str(os.getpid()))
            if task.resume:
                state, extra = load_last(task.agent, config, task.trial_dir)
            else:
                state, extra = module.init(config), None
            recorder = TrialRecorder(task.agent, config, task.trial_dir, resume_extra=extra, hparams=task.params,
                                     tb_run=tb_run_name(task.trial_id, task.params),
                                     checkpoint_interval=CHECKPOINT_INTERVAL)
            member = Member(task, config, recorder, slot, task.report_steps,
                            _segment_updates(config, RunOptions()))
            population.admit(member, state)
        except Exception as exc:  # a bad member fails alone
            Path(task.trial_dir).mkdir(parents=True, exist_ok=True)
            (Path(task.trial_dir) / "error.txt").write_text(traceback.format_exc())
            outbox.put(("failed", worker_id, task.trial_id, f"{type(exc).__name__}: {exc}"))


def _run_segment(population: Population, worker_id: int, outbox, decisions, receive,
                 pbt: PBTRun | None = None) -> None:
    from rltune.runner import TrialDiverged

    host_states, host_metrics, n, seconds = population.step()
    waiting, diverged, at_interval = [], [], False
    for slot, member in list(population.members.items()):
        state = _member(host_states, slot)
        metrics = _member(host_metrics, slot)
        trial = member.task.trial_id
        try:
            member.recorder.record_segment(state, metrics, n[slot], seconds,
                                           compile_seconds=population.compile_seconds)
        except TrialDiverged as exc:
            if pbt is not None:  # replaced by a copy of a top member below
                diverged.append(slot)
                continue
            member.recorder.fail(state, str(exc))
            del population.members[slot]
            outbox.put(("failed", worker_id, trial, f"diverged: {exc}"))
            continue
        if int(state.update) >= member.config.num_updates:
            _finish(population, slot, state, "completed", worker_id, outbox)
            continue
        reward = member.recorder.reward
        steps = int(state.env_steps)
        before = steps - n[slot] * member.config.steps_per_update
        answer = needs_answer(member.report_steps, before, steps)
        outbox.put(("report", worker_id, trial, steps, reward if reward is not None else -math.inf, answer))
        if answer:  # else the decision is "continue": no round trip to the driver
            waiting.append((slot, trial, state))
        at_interval = at_interval or answer
    while any(trial not in decisions for _, trial, _ in waiting):
        if not receive(block=True):
            raise SystemExit(0)
    for slot, trial, state in waiting:
        if decisions.pop(trial) == "stop":
            _finish(population, slot, state, "stopped", worker_id, outbox)
    if pbt is not None and (at_interval or diverged):
        _pbt_round(population, pbt, host_states, diverged, not at_interval, worker_id, outbox)


def _pbt_round(population: Population, pbt: PBTRun, host_states, diverged: list[int], only_failed: bool,
               worker_id: int, outbox) -> None:
    """Exploit and explore among the members still training; report each copy."""
    import dataclasses

    import jax
    import numpy as np

    from rltune.config import to_dict

    host_hps = jax.device_get(population.hps)
    slot_of = {m.task.trial_id: slot for slot, m in population.members.items()}
    values, hps = {}, {}
    for trial, slot in slot_of.items():
        reward = population.members[slot].recorder.reward
        values[trial] = math.nan if slot in diverged else (reward if reward is not None else -math.inf)
        hps[trial] = {name: _short_float(host_hps[name][slot]) for name in pbt.names}
    failed = [population.members[slot].task.trial_id for slot in diverged]
    choices = pbt.scheduler.exploit_explore(values, hps, failed=failed, only_failed=only_failed)
    # the values the members train with (float32), written as they will be replayed
    choices = [dataclasses.replace(c, hps={k: _short_float(np.float32(v)) for k, v in c.hps.items()})
               for c in choices]
    copies = {slot_of[c.member]: (slot_of[c.source], c.hps, c.member) for c in choices}
    for slot in diverged:
        if slot not in copies:  # no healthy member left to copy: it fails after all
            member = population.members.pop(slot)
            member.recorder.fail(_member(host_states, slot), "diverged, and no healthy member to copy")
            outbox.put(("failed", worker_id, member.task.trial_id, "diverged: no healthy member to copy"))
    if not copies:
        return
    population.exploit(copies)
    for choice in choices:
        slot, source = slot_of[choice.member], slot_of[choice.source]
        member = population.members[slot]
        traced = {k: _short_float(v[source]) for k, v in host_hps.items()}
        member.config = dataclasses.replace(member.config, **{**traced, **choice.hps})
        member.recorder.config, member.recorder.config_dict = member.config, to_dict(member.config)
        step = int(host_states.env_steps[source])
        outbox.put(("exploited", worker_id, choice.member, step, choice.source, dict(choice.hps), choice.reason))


def _short_float(x) -> float:
    """A float32 hyperparameter as the shortest decimal that reads back as the same float32."""
    return float(f"{float(x):.9g}")


def _finish(population: Population, slot: int, state, status: str, worker_id: int, outbox) -> None:
    from rltune.tune.trial import result_message, trial_result

    member = population.members.pop(slot)
    task = member.task
    try:
        summary = member.recorder.finish(state, status, task.eval_episodes, eval_reference=False)
    except Exception as exc:
        outbox.put(("failed", worker_id, task.trial_id, f"{type(exc).__name__}: {exc}"))
        return
    outbox.put(result_message(worker_id, task.trial_id, trial_result(summary, task.metric)))
