"""Workers of a cold study compile each program once between them (rltune.tune.warmup)."""

import collections
import contextlib
import fcntl
import logging
import queue
import re
import threading
import time
import uuid

import jax
import pytest

from rltune.agents import ppo
from rltune.config import from_dict
from rltune.runner import RunOptions, train
from rltune.tune import warmup
from rltune.tune.executors.base import TrialTask
from rltune.tune.executors.population import Population, _admit_pending, _finish

TINY = {"env": "CartPole-v1", "num_envs": 2, "num_steps": 8, "num_minibatches": 1, "update_epochs": 1,
        "hidden_size": 8, "total_steps": 64}


def _wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_worker_compiles_what_no_other_worker_holds_and_takes_the_rest_up_last(tmp_path):
    key, events = f"test {uuid.uuid4()}", []
    holding, release = threading.Event(), threading.Event()

    def other_worker():  # compiling "segment": it holds that program's lock
        with open(tmp_path / f"{warmup._lock_key(key, 'segment')}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            holding.set()
            release.wait(30)
            events.append("other worker done")
            fcntl.flock(handle, fcntl.LOCK_UN)

    programs = [warmup.Program(name, lambda name=name: events.append(name)) for name in ("init", "segment", "evaluate")]
    other = threading.Thread(target=other_worker)
    other.start()
    holding.wait(30)
    ran = []
    worker = threading.Thread(target=lambda: ran.extend(warmup._compile_in_turn(programs, key, 1, tmp_path)))
    worker.start()  # worker 1 starts at "segment", which is held: it goes on with the others
    _wait_for(lambda: len(events) == 2)
    time.sleep(0.2)
    assert events == ["evaluate", "init"]  # and waits for "segment"
    release.set()
    worker.join(30)
    other.join(30)
    assert events == ["evaluate", "init", "other worker done", "segment"]
    assert ran == ["evaluate", "init", "segment"]
    assert warmup._compile_in_turn(programs, key, 0, tmp_path) == []  # this process has them all


def test_a_program_that_fails_to_warm_up_is_left_to_the_trial(tmp_path, capsys):
    key = f"test {uuid.uuid4()}"

    def broken():
        raise ValueError("no such shape")

    programs = [warmup.Program("init", lambda: None), warmup.Program("segment", broken)]
    assert warmup._compile_in_turn(programs, key, 0, tmp_path) == ["init"]
    assert "warm-up of segment skipped (ValueError: no such shape)" in capsys.readouterr().err
    with open(tmp_path / f"{warmup._lock_key(key, 'segment')}.lock", "a") as handle:  # and unlocked
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert warmup._compile_in_turn(programs, key, 0, tmp_path) == []  # not tried again
    assert capsys.readouterr().err == ""


def test_a_worker_stuck_in_a_compile_holds_up_the_others_only_so_long(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "WAIT_SECONDS", 0.3)
    key, ran = f"test {uuid.uuid4()}", []
    with open(tmp_path / f"{warmup._lock_key(key, 'segment')}.lock", "a") as stuck:
        fcntl.flock(stuck, fcntl.LOCK_EX)  # held for good by a hung worker
        start = time.monotonic()
        done = warmup._compile_in_turn([warmup.Program("segment", lambda: ran.append(1))], key, 0, tmp_path)
        assert done == ["segment"] and ran == [1]  # compiled it itself
        assert 0.3 <= time.monotonic() - start < 10


def test_whatever_fails_in_a_warm_up_leaves_the_trial_to_compile(tmp_path, capsys):
    task = TrialTask(trial_id=0, trial_dir=str(tmp_path / "0"), params={}, agent="ppo",
                     config={**TINY, "env": "NoSuchEnv-v0"})
    warmup.warm_up_trial(task, 0)  # no exception: the trial reports the unknown env itself
    assert "compile warm-up skipped" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def own_executable_cache(tmp_path_factory, monkeypatch):
    """An executable cache of this test's own: programs an earlier run stored on disk would be
    loaded instead of lowered, and these tests look at what is lowered when."""
    monkeypatch.setattr("rltune.compile_cache._enabled", tmp_path_factory.mktemp("compile-cache"))


@contextlib.contextmanager
def lowered_programs():
    """The names of the programs JAX lowers inside the block (jax_log_compiles' log lines)."""
    names, handler = [], logging.Handler()
    handler.emit = lambda record: names.extend(re.findall(r"^Compiling jit\((\S+)\)", record.getMessage()))
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        yield names
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)


def test_a_warmed_up_trial_lowers_none_of_its_programs_again(tmp_path):
    """The placeholders have the real inputs' shapes, dtypes and weak types: the trial's own
    calls find every program in the process's jit caches."""
    # a static shape of its own (hidden_size): no other test has compiled these programs
    config = from_dict(ppo.PPOConfig, {**TINY, "gamma": 0.97, "hidden_size": 7})
    with lowered_programs() as warm:
        ran = warmup._compile_in_turn(warmup.trial_programs("ppo", config, 3), f"test {uuid.uuid4()}", 0, tmp_path)
    assert ran == ["init", "segment", "evaluate"]
    assert {"_init_jit", "_segment_jit", "run"} <= set(warm)
    with lowered_programs() as again:
        summary = train("ppo", config, tmp_path / "run", options=RunOptions(eval_episodes=3, eval_reference=False))
    assert summary["eval"]["episodes"] == 3
    assert not {"_init_jit", "_segment_jit", "run"} & set(again)


def test_a_warmed_up_population_compiles_nothing_more(tmp_path):
    capacity, outbox = 2, queue.Queue()
    population = Population("ppo", capacity)
    tasks = [TrialTask(trial_id=i, trial_dir=str(tmp_path / str(i)), params={}, agent="ppo",
                       config={**TINY, "hidden_size": 6, "learning_rate": 1e-3 * (i + 1)}, eval_episodes=3,
                       metric="eval_return") for i in range(2)]
    config = from_dict(ppo.PPOConfig, tasks[0].config)
    ran = warmup._compile_in_turn(warmup.population_programs(population, config, 3), f"test {uuid.uuid4()}", 0,
                                  tmp_path)
    assert ran == ["init", "population_segment", "evaluate"]
    with lowered_programs() as again:
        _admit_pending(population, collections.deque(tasks), 0, outbox)
        host_states, _, _, _ = population.step()
        _finish(population, 0, jax.tree.map(lambda x: x[0], host_states), "completed", 0, outbox)
    assert not {"_init_jit", "set_slot", "<lambda>", "run"} & set(again), again
    messages = [outbox.get_nowait() for _ in range(outbox.qsize())]
    assert [m[0] for m in messages] == ["started", "started", "done"]


def _run_with_hint(tmp_path, monkeypatch, name, loop, hint, tasks):
    """Run a worker loop in a thread: the hint first; once the worker has warmed up on it, the
    tasks. Returns (the tasks the warm-up functions saw, programs lowered for the tasks, messages)."""
    warmed, done = [], threading.Event()
    original = getattr(warmup, name)

    def spy(*args):
        task = args[1] if name == "warm_up_population" else args[0]
        warmed.append(task.trial_id)
        original(*args)
        done.set()

    monkeypatch.setattr(warmup, name, spy)
    inbox, outbox = queue.Queue(), queue.Queue()
    worker = threading.Thread(target=loop, args=(inbox, outbox))
    worker.start()
    inbox.put(("warmup", hint))
    _wait_for(lambda: done.is_set() or not worker.is_alive(), 120)
    assert done.is_set()
    messages = []
    with lowered_programs() as lowered:
        for task in tasks:
            inbox.put(task)
        while sum(m[0] == "done" for m in messages) < len(tasks):
            messages.append(outbox.get(timeout=120))
    inbox.put(None)
    worker.join(30)
    assert not (tmp_path / "-1").exists()  # a hint runs nothing and writes no trial directory
    return warmed, lowered, messages


def test_a_population_worker_warmed_up_by_the_hint_compiles_nothing_for_its_first_members(tmp_path, monkeypatch):
    from rltune.tune.executors.population import _population_loop

    config = {**TINY, "hidden_size": 5}  # a static shape no other test compiles
    hint = TrialTask(trial_id=-1, trial_dir=str(tmp_path / "-1"), params={}, agent="ppo",
                     config={**config, "learning_rate": 1e-5}, eval_episodes=3)
    tasks = [TrialTask(trial_id=i, trial_dir=str(tmp_path / str(i)), params={}, agent="ppo",
                       config={**config, "learning_rate": 1e-3 * (i + 1)}, eval_episodes=3) for i in range(2)]
    warmed, lowered, messages = _run_with_hint(
        tmp_path, monkeypatch, "warm_up_population",
        lambda inbox, outbox: _population_loop(0, inbox, outbox, 2, "local", True), hint, tasks)
    assert warmed == [-1]  # the members found their programs warm: no second warm-up
    assert not {"_init_jit", "<lambda>", "run"} & set(lowered), lowered
    assert sorted(m[2] for m in messages if m[0] == "done") == [0, 1]


@pytest.mark.parametrize("share_compiles", [True, False])
def test_a_local_worker_warmed_up_by_the_hint_compiles_nothing_for_its_first_trial(tmp_path, monkeypatch,
                                                                                   share_compiles):
    from rltune.tune.executors.local import _worker_loop
    from rltune.tune.trial import result_message, run_task

    config = {**TINY, "hidden_size": 4 if share_compiles else 3}
    hint = TrialTask(trial_id=-1, trial_dir=str(tmp_path / "-1"), params={}, agent="ppo",
                     config={**config, "gamma": 0.9}, eval_episodes=3)
    task = TrialTask(trial_id=0, trial_dir=str(tmp_path / "0"), params={}, agent="ppo",
                     config={**config, "gamma": 0.95}, eval_episodes=3)
    warmed, lowered, messages = _run_with_hint(
        tmp_path, monkeypatch, "warm_up_trial",
        lambda inbox, outbox: _worker_loop(0, inbox, outbox, "local", result_message, run_task, share_compiles),
        hint, [task])
    # a worker that shares compiles calls the warm-up again for its trial: it finds the config done
    assert warmed == ([-1, 0] if share_compiles else [-1])
    assert not {"_init_jit", "_segment_jit", "run"} & set(lowered), lowered
    assert messages[0][0] == "started" and messages[-1][0] == "done"


def test_the_driver_hints_a_first_trial_only_when_no_searched_param_fixes_a_shape(tmp_path):
    from rltune.tune.driver import StudyDriver
    from rltune.tune.spec import spec_from_dict

    def driver(space, **kwargs):
        fixed = {k: v for k, v in TINY.items() if k not in space and k != "env"}
        spec = spec_from_dict({"name": "hint", "agent": "ppo", "env": "CartPole-v1", "fixed": fixed,
                               "search_space": space, "trials": 4, "parallel": 2})
        return StudyDriver(spec, tmp_path / "study", eval_episodes=3, **kwargs)

    traced = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"},
              "ent_coef": {"type": "discrete", "values": [0.01, 0.02]}}
    hint = driver(traced).warm_up_hint()
    assert hint.params == {"learning_rate": 1e-4, "ent_coef": 0.01} and hint.eval_episodes == 3
    config = from_dict(ppo.PPOConfig, hint.config)  # a config a trial could get
    assert (config.hidden_size, config.learning_rate, config.ent_coef) == (8, 1e-4, 0.01)
    # a static searched param would warm up one shape of many, maybe one no trial uses
    assert driver({**traced, "hidden_size": {"type": "int", "low": 8, "high": 64}}).warm_up_hint() is None
    assert driver({**traced, "seed": {"type": "int", "low": 0, "high": 9}}).warm_up_hint() is None
    assert driver(traced, resume=True).warm_up_hint() is None  # its trials continue from checkpoints
    assert not (tmp_path / "study").exists()  # nothing written


def test_a_new_population_takes_the_tasks_still_arriving_into_its_first_segment(tmp_path, monkeypatch):
    """Tasks submitted while a shard warms up (or a few milliseconds apart) all start in the
    first segment: a member admitted a segment later would keep every slot busy one segment
    longer at the end."""
    from rltune.tune.executors import population

    monkeypatch.setattr(population, "FIRST_MEMBERS_QUIET_SECONDS", 2.0)  # a scheduling stall is no gap
    _population_loop = population._population_loop
    inbox, outbox = queue.Queue(), queue.Queue()
    tasks = [TrialTask(trial_id=i, trial_dir=str(tmp_path / str(i)), params={}, agent="ppo",
                       config={**TINY, "learning_rate": 1e-3 * (i + 1)}, eval_episodes=2) for i in range(3)]
    worker = threading.Thread(target=_population_loop, args=(0, inbox, outbox, 3, "local", False))
    worker.start()
    for task in tasks:
        inbox.put(task)
        time.sleep(0.1)  # a slow driver, yet quicker than the shard's quiet period
    messages = []
    while sum(m[0] == "done" for m in messages) < len(tasks):
        messages.append(outbox.get(timeout=120))
    inbox.put(None)
    worker.join(30)
    kinds = [m[0] for m in messages]
    assert kinds[:3] == ["started"] * 3, kinds  # all three admitted before the first segment's reports
