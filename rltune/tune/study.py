"""The tuning driver: space -> sampler (Optuna) -> workers -> scheduler -> storage.

Only this process writes to the study storage (an Optuna RDB: a SQLite file in the study
directory by default, so optuna-dashboard opens it). Trials run in long-lived worker
processes (see worker.py); a trial that raises, diverges or whose process dies is recorded as
FAILED with its reason, and the study goes on until `max_failed_trials`.

Study directory:
    spec.yaml            the resolved study spec
    study.db             Optuna storage (unless --storage names another)
    trials/<n>/          one directory per trial (run directory or the trainer's job dir + log)
    trials.csv           the trials table, rewritten as trials finish
    best_config.yaml     the best trial's config (`rltune train <agent> --config` accepts it)
    summary.json         study summary
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from rltune.errors import UsageError
from rltune.tune.spec import StudySpec, dump_spec, spec_to_dict
from rltune.tune.worker import TrialTask, worker_main

INTERRUPTED = "interrupted"


@dataclass
class TrialRecord:
    """What the driver knows of one trial (mirrors storage; rendered as the trials table)."""

    number: int
    params: dict[str, Any]
    state: str = "RUNNING"  # RUNNING | COMPLETE | PRUNED | FAIL
    value: float | None = None
    step: int | None = None
    wall_time: float | None = None
    reason: str | None = None
    eval_mean: float | None = None
    started: float = field(default_factory=time.time)


@dataclass
class _Running:
    optuna_trial: optuna.trial.Trial
    record: TrialRecord
    worker: int
    reported_boundaries: set = field(default_factory=set)
    pausing: bool = False  # the scheduler paused it at a barrier: it stops, keeping its checkpoint


@dataclass(frozen=True)
class StudyResult:
    study_dir: Path
    records: list[TrialRecord]
    best: TrialRecord | None
    interrupted: bool = False


# ---------------------------------------------------------------- preparation (no writes)
def prepare(spec: StudySpec) -> StudySpec:
    """Every check that can fail on the user's input, before anything is written."""
    from rltune.tune.spec import check_runnable

    check_runnable(spec)
    if spec.agent is not None:
        import dataclasses

        from rltune.agents import get_agent
        from rltune.config import from_dict
        from rltune.envs import env_info
        from rltune.tune.spec import validate_against_agent

        module = get_agent(spec.agent)
        names = {f.name for f in dataclasses.fields(module.Config)}
        validate_against_agent(spec, names, agent=spec.agent)
        base = base_config(spec)
        from_dict(module.Config, base, source="fixed")
        # Every end of every searched range must make a valid config (e.g. gamma <= 1).
        for p in spec.space:
            for value in _extremes(p):
                try:
                    from_dict(module.Config, {**base, p.name: value}, source="search_space")
                except UsageError as exc:
                    raise UsageError(f"search_space.{p.name}", f"value {value!r} is invalid for the agent: "
                                     f"{exc}") from None
        env_info(base.get("env", "CartPole-v1"), base.get("backend", "auto"))
    if spec.executor == "population":
        from rltune.tune.population import population_support

        if spec.agent is None or not population_support(spec.agent):
            raise UsageError("executor", "the population executor needs a built-in agent that supports it "
                             f"(ppo); got {spec.agent or 'an external command'}: use executor local")
    elif spec.executor != "local":
        raise UsageError("executor", f"unknown executor {spec.executor!r}: choose local or population")
    return spec


def _extremes(p) -> list:
    if p.kind in ("float", "int"):
        return [p.low, p.high]
    return list(p.values)


def base_config(spec: StudySpec) -> dict[str, Any]:
    base = dict(spec.fixed)
    if spec.env:
        base["env"] = spec.env
    if spec.budget_steps:
        base["total_steps"] = spec.budget_steps
    return base


def agent_config(spec: StudySpec, params: dict[str, Any] | None = None):
    """The built-in agent's config for this study: fixed settings, env, budget, then `params`."""
    from rltune.agents import get_agent
    from rltune.config import from_dict

    return from_dict(get_agent(spec.agent).Config, {**base_config(spec), **(params or {})})


def trial_budget(spec: StudySpec) -> int:
    if spec.agent is None:
        return int(spec.budget_steps or 0)
    return agent_config(spec).total_steps


SCHEDULER_UNITS = ("steps", "updates")


def steps_per_unit(spec: StudySpec) -> int:
    """Env steps in one unit of the scheduler's rungs/phases (`scheduler: {unit: updates}`)."""
    unit = spec.scheduler.params.get("unit", "steps")
    if unit not in SCHEDULER_UNITS:
        raise UsageError("scheduler.unit", f"must be one of {', '.join(SCHEDULER_UNITS)}; got {unit!r}")
    if unit == "steps":
        return 1
    if spec.agent is None:
        raise UsageError("scheduler.unit", "updates are known only for built-in agents; an external "
                         "trainer's unit is the step it reports (use unit: steps)")
    return agent_config(spec).steps_per_update


def make_scheduler_for(spec: StudySpec):
    from rltune.schedulers import default_early_stopping, make_scheduler

    budget = trial_budget(spec) // steps_per_unit(spec)
    params = {k: v for k, v in spec.scheduler.params.items() if k != "unit"}
    if spec.scheduler.name == "fifo" and spec.early_stopping:
        if budget <= 0:
            raise UsageError("budget_steps", "early stopping of external trials needs budget_steps "
                             "(the steps at which the trainer reports)")
        return default_early_stopping(budget, spec.num_trials, spec.goal)
    if spec.scheduler.name != "fifo" and budget <= 0:
        raise UsageError("budget_steps", f"scheduler {spec.scheduler.name!r} needs budget_steps for "
                         "external trials")
    return make_scheduler(spec.scheduler.name, goal=spec.goal, max_steps=max(budget, 1),
                          num_trials=spec.num_trials, **params)


def auto_size(spec: StudySpec) -> int:
    from rltune.tune.population import auto_population_size

    return auto_population_size(spec.agent, agent_config(spec), spec.num_trials)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna RDB storage. A SQLite file runs in WAL mode with synchronous=NORMAL: each commit no
    longer waits for the disk (an fsync), which was most of the engine's per-trial cost; a crash
    of rltune loses nothing committed, a power cut at most the last transactions."""
    storage = optuna.storages.RDBStorage(url)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        def pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        event.listen(storage.engine, "connect", pragmas)
        storage.engine.dispose()  # reconnect with the pragmas
    return storage


def storage_url(spec: StudySpec, study_dir: Path, override: str | None) -> str:
    url = override or spec.storage
    return url or f"sqlite:///{(study_dir / 'study.db').resolve()}"


# ---------------------------------------------------------------- the driver
class StudyDriver:
    def __init__(self, spec: StudySpec, study_dir: Path, *, storage: str | None = None, resume: bool = False,
                 live: bool = False, eval_episodes: int = 10,
                 population_size: int | None = None):
        self.spec = spec
        self.study_dir = Path(study_dir)
        self.storage_url = storage_url(spec, self.study_dir, storage)
        self.resume = resume
        self.live = live
        self.eval_episodes = eval_episodes
        self.scheduler = make_scheduler_for(spec)
        # rung/phase boundaries in the scheduler's unit, and the env steps where trials must report
        self.unit_steps = steps_per_unit(spec)
        self.budget_units = (trial_budget(spec) // self.unit_steps) or 1 << 62
        self.boundaries = tuple(self.scheduler.boundaries())
        self.report_steps = tuple(b * self.unit_steps for b in self.boundaries)
        self.records: dict[int, TrialRecord] = {}
        self.running: dict[int, _Running] = {}
        self.paused: dict[int, _Running] = {}  # waiting at a barrier (successive halving, hyperband)
        self._pending_reports: list = []  # intermediate values not yet in storage
        self._ctx = mp.get_context("spawn")
        self._outbox = self._ctx.Queue()
        self._workers: dict[int, tuple[Any, Any]] = {}  # worker id -> (process, inbox)
        self._idle: list[int] = []
        self._next_worker = 0
        # local: `parallel` processes of one slot each; population: one process of many slots
        if spec.executor == "population":
            self.processes, self.slots_per_process = 1, population_size or auto_size(spec)
        else:
            self.processes, self.slots_per_process = max(1, spec.parallel), 1
        self.threshold_reached = False
        self.interrupt_requested = False  # set by Ctrl-C; the loop stops at its next safe point
        # Optuna's grid sampler repeats points once the grid is used up: cap the trials at its size.
        self.max_trials = min(spec.num_trials, spec.space.grid_size()) if spec.sampler.name == "grid" \
            else spec.num_trials

    # ------------------------------------------------------------ storage
    def _open_study(self) -> optuna.Study:
        from rltune.tune.samplers import make_sampler

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = make_sampler(self.spec.sampler.name, self.spec.space, self.spec.sampler.seed,
                               **self.spec.sampler.options)
        storage = self._storage = open_storage(self.storage_url)
        names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
        if self.spec.name in names and not self.resume:
            raise UsageError("--resume", f"study {self.spec.name!r} already exists in {self.storage_url}; "
                             "pass --resume to continue it or choose another --out / name")
        study = optuna.create_study(storage=storage, study_name=self.spec.name, sampler=sampler,
                                    direction=self.spec.direction, load_if_exists=True)
        study.set_user_attr("spec", json.loads(json.dumps(spec_to_dict(self.spec), default=str)))
        return study

    def _recover(self, study: optuna.Study) -> None:
        """Load finished trials; trials left RUNNING by an interrupted driver are marked FAILED
        (interrupted) and queued again with the same parameters."""
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.RUNNING:
                self._storage.set_trial_user_attr(t._trial_id, "result", {"reason": INTERRUPTED})
                study.tell(t.number, state=TrialState.FAIL)
                study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
        for t in study.get_trials(deepcopy=False):
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
                self.records[t.number] = _record_from_frozen(t, self.spec)

    def _import_previous(self, study: optuna.Study) -> None:
        """resumePreviousJobId / resume_from: reuse the completed trials of an earlier study."""
        if not self.spec.resume_from or study.user_attrs.get("imported_from") == self.spec.resume_from:
            return
        prev_dir = Path(self.spec.resume_from)
        url = f"sqlite:///{(prev_dir / 'study.db').resolve()}" if prev_dir.is_dir() else self.storage_url
        name = None if prev_dir.is_dir() else self.spec.resume_from
        try:
            prev = optuna.load_study(study_name=name, storage=url)
        except (KeyError, ValueError) as exc:
            raise UsageError("resume_from", f"cannot load previous study {self.spec.resume_from!r}: {exc}") from None
        for t in prev.get_trials(deepcopy=True, states=(TrialState.COMPLETE,)):
            study.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                      value=t.value, user_attrs={**t.user_attrs,
                                                                                 "imported_from": t.number}))
        study.set_user_attr("imported_from", self.spec.resume_from)

    # ------------------------------------------------------------ workers
    def _ensure_workers(self) -> None:
        from rltune.tune.population import population_main

        while len(self._workers) < self.processes:
            wid = self._next_worker
            self._next_worker += 1
            inbox = self._ctx.Queue()
            if self.slots_per_process > 1 or self.spec.executor == "population":
                target, args = population_main, (wid, inbox, self._outbox, self.slots_per_process)
            else:
                target, args = worker_main, (wid, inbox, self._outbox)
            proc = self._ctx.Process(target=target, args=args, daemon=True, name=f"rltune-worker-{wid}")
            proc.start()
            self._workers[wid] = (proc, inbox)
            self._idle.extend([wid] * self.slots_per_process)

    def _stop_workers(self, force: bool = False) -> None:
        for proc, inbox in self._workers.values():
            if force:
                proc.kill()
            else:
                inbox.put(None)
        for proc, _ in self._workers.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self._workers.clear()

    # ------------------------------------------------------------ main loop
    def check_fresh(self) -> None:
        """A new study must not overwrite an old one: checked before anything is written."""
        if not self.resume and (self.study_dir / "study.db").exists():
            raise UsageError("--out", f"{self.study_dir} already holds a study; pass --resume to continue "
                             "it, or choose another --out")
        if self.resume and not (self.study_dir / "study.db").exists() and not (self.storage_url and
                                                                               not self.storage_url.startswith("sqlite:///" + str(self.study_dir.resolve()))):
            raise UsageError("--resume", f"there is no study to resume in {self.study_dir}")

    def run(self) -> StudyResult:
        self.check_fresh()
        self.study_dir.mkdir(parents=True, exist_ok=True)
        (self.study_dir / "trials").mkdir(exist_ok=True)
        dump_spec(self.spec, self.study_dir / "spec.yaml")
        study = self._open_study()
        self._import_previous(study)
        self._recover(study)
        interrupted = False
        display = _LiveTable(self) if self.live else None
        previous_handler = _catch_interrupt(self)
        try:
            self._ensure_workers()
            while not self.interrupt_requested:
                self._launch(study)
                if not self.running:
                    if not self.paused:
                        break
                    self._release_stuck_pauses(study)
                    continue
                self._poll(study, timeout=0.2)
                if display:
                    display.refresh()
            if self.interrupt_requested:
                interrupted = True
                self._interrupt(study)
        finally:
            _restore_interrupt(previous_handler)
            if display:
                display.close()
            self._stop_workers(force=interrupted)
            self._write_outputs()
        return StudyResult(self.study_dir, self.sorted_records(), self.best(), interrupted)

    def _counted(self) -> int:
        return sum(1 for r in self.records.values() if r.reason != INTERRUPTED)

    def failures(self) -> int:
        return sum(1 for r in self.records.values() if r.state == "FAIL" and r.reason != INTERRUPTED)

    def _done_launching(self) -> bool:
        if self.failures() >= self.spec.failed_trials_limit:
            return True
        if self.threshold_reached:
            return True
        return self._counted() >= self.max_trials

    def _launch(self, study: optuna.Study) -> None:
        self._settle_paused(study)
        while self._idle and self.paused and self._resume_one():
            pass
        while self._idle and not self._done_launching():
            wid = self._idle.pop(0)
            trial = study.ask()
            params = self.spec.space.suggest(trial)
            record = TrialRecord(number=trial.number, params=params)
            self.records[trial.number] = record
            self.running[trial.number] = _Running(trial, record, wid)
            self._workers[wid][1].put(self._task(record))

    def _task(self, record: TrialRecord, resume: bool = False) -> TrialTask:
        return TrialTask(trial_id=record.number, trial_dir=str(self.study_dir / "trials" / str(record.number)),
                         params=record.params, agent=self.spec.agent,
                         config={**base_config(self.spec), **record.params}, command=self.spec.command,
                         metric=self.spec.metric, goal=self.spec.goal, report_steps=self.report_steps,
                         eval_episodes=self.eval_episodes, resume=resume)

    def _settle_paused(self, study) -> None:
        """Paused trials that lost at their barrier end as PRUNED, keeping their last value."""
        stopped = set(self.scheduler.stopped())
        for number in [n for n in self.paused if n in stopped]:
            run = self.paused.pop(number)
            self.running[number] = run
            self._finish(study, run, "PRUNED")

    def _resume_one(self) -> bool:
        """Resume one paused trial that won at its barrier, from its last checkpoint."""
        for number in self.scheduler.resumable():
            if number in self.paused:
                run = self.paused.pop(number)
                wid = self._idle.pop(0)
                run.worker, run.pausing = wid, False
                run.record.state = "RUNNING"
                self.running[number] = run
                self._workers[wid][1].put(self._task(run.record, resume=True))
                return True
        return False

    def _release_stuck_pauses(self, study) -> None:
        """Nothing runs and no barrier can resolve (fewer trials than a rung needs): the paused
        trials keep what they reached, as PRUNED."""
        self._settle_paused(study)
        if self.running or not self.paused or self.scheduler.resumable():
            return
        for number in list(self.paused):
            run = self.paused.pop(number)
            self.running[number] = run
            self.scheduler.on_complete(number)
            self._finish(study, run, "PRUNED")

    def _poll(self, study: optuna.Study, timeout: float) -> None:
        try:
            msg = self._outbox.get(timeout=0 if self._pending_reports else timeout)
        except queue.Empty:
            msg = None
            self._flush_reports()
        if msg is not None:
            self._handle(study, msg)
        self._check_dead_workers(study)

    def _flush_reports(self) -> None:
        for trial, value, step in self._pending_reports:
            trial.report(value, step)
        self._pending_reports.clear()

    def _handle(self, study: optuna.Study, msg) -> None:
        kind, wid, number = msg[0], msg[1], msg[2]
        run = self.running.get(number)
        if run is None:
            return
        if kind == "report":
            step, value = msg[3], msg[4]
            self._workers[wid][1].put(("decision", number, self._decide(run, step, value)))
        elif kind == "done" and run.pausing:
            del self.running[number]
            run.record.state = "PAUSED"
            self.paused[number] = run
            self._idle.append(wid)
        elif kind == "done":
            result = msg[3]
            self._finish(study, run, "PRUNED" if result["status"] == "stopped" else "COMPLETE", value=result["value"],
                         step=result["step"], wall_time=result["wall_time"], eval_mean=result.get("eval_mean"))
            self._idle.append(wid)
        elif kind == "failed":
            self._finish(study, run, "FAIL", reason=msg[3])
            self._idle.append(wid)

    def _decide(self, run: _Running, step: int, value: float) -> str:
        """Record an intermediate value; ask the scheduler at each boundary crossed."""
        run.record.step, run.record.value = step, value
        if math.isfinite(value):
            # Written to storage later (see _flush_reports): the trial waits for our answer, not for disk.
            self._pending_reports.append((run.optuna_trial, value, step))
        if self.spec.stop.get("metric_threshold") is not None and _reaches(value, self.spec):
            self.threshold_reached = True
        decision = "continue"
        progress = step // self.unit_steps
        for boundary in self.boundaries:
            if boundary <= progress and boundary not in run.reported_boundaries and boundary < self.budget_units:
                run.reported_boundaries.add(boundary)
                decision = self.scheduler.on_report(run.record.number, boundary, value)
                if decision != "continue":
                    break
        if decision == "pause":
            if self.spec.command is not None:
                # An external trainer cannot be resumed from our checkpoint: it is stopped.
                return "stop"
            run.pausing = True  # the runner stops here with its checkpoint; resumed if it wins
            return "stop"
        return decision

    def _finish(self, study, run: _Running, state: str, *, value=None, step=None, wall_time=None,
                eval_mean=None, reason=None) -> None:
        self._flush_reports()
        rec = run.record
        rec.state = state
        rec.value = value if value is not None else rec.value
        rec.step = step if step is not None else rec.step
        rec.wall_time = wall_time if wall_time is not None else time.time() - rec.started
        rec.eval_mean, rec.reason = eval_mean, reason
        trial = run.optuna_trial
        # one attribute, one transaction
        trial.set_user_attr("result", {"reason": reason, "eval_mean": eval_mean, "wall_time": rec.wall_time,
                                       "step": rec.step, "last_value": rec.value})
        if state == "COMPLETE":
            study.tell(trial, rec.value)
        elif state == "PRUNED":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.FAIL)
        if state in ("COMPLETE", "PRUNED") and rec.value is not None and _reaches(rec.value, self.spec):
            self.threshold_reached = True
        self.scheduler.on_complete(rec.number)
        del self.running[rec.number]
        self._write_table()

    def _check_dead_workers(self, study) -> None:
        for wid, (proc, _) in list(self._workers.items()):
            if proc.is_alive():
                continue
            del self._workers[wid]
            self._idle = [w for w in self._idle if w != wid]
            for run in list(self.running.values()):
                if run.worker == wid:
                    code = proc.exitcode
                    reason = f"worker killed by signal {-code}" if code and code < 0 else f"worker exited ({code})"
                    self._finish(study, run, "FAIL", reason=reason)
            self._ensure_workers()

    def _interrupt(self, study) -> None:
        self.running.update(self.paused)
        self.paused.clear()
        for run in list(self.running.values()):
            self._finish(study, run, "FAIL", reason=INTERRUPTED)

    # ------------------------------------------------------------ results
    def sorted_records(self) -> list[TrialRecord]:
        return [self.records[k] for k in sorted(self.records)]

    def best(self) -> TrialRecord | None:
        """Best among completed and early-stopped trials (a stopped trial keeps its result)."""
        candidates = [r for r in self.records.values() if r.state in ("COMPLETE", "PRUNED") and r.value is not None]
        if not candidates:
            return None
        sign = 1 if self.spec.goal == "maximize" else -1
        return max(candidates, key=lambda r: (sign * r.value, r.state == "COMPLETE"))

    def _write_table(self) -> None:
        write_trials_csv(self.study_dir / "trials.csv", self.sorted_records(), self.spec)

    def _write_outputs(self) -> None:
        self._write_table()
        best = self.best()
        summary = {"name": self.spec.name, "storage": self.storage_url, "trials": len(self.records),
                   "complete": sum(r.state == "COMPLETE" for r in self.records.values()),
                   "pruned": sum(r.state == "PRUNED" for r in self.records.values()),
                   "failed": self.failures(), "best": _record_dict(best) if best else None}
        (self.study_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if best is not None:
            write_best_config(self.study_dir / "best_config.yaml", self.spec, best)


def _catch_interrupt(driver: StudyDriver):
    """Ctrl-C asks the driver to stop at a safe point (never in the middle of a storage write);
    a second Ctrl-C interrupts at once."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if driver.interrupt_requested:
            raise KeyboardInterrupt
        driver.interrupt_requested = True

    return signal.signal(signal.SIGINT, handler)


def _restore_interrupt(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGINT, previous)


def _reaches(value: float, spec: StudySpec) -> bool:
    threshold = spec.stop.get("metric_threshold")
    if threshold is None or value is None or not math.isfinite(value):
        return False
    return value >= threshold if spec.goal == "maximize" else value <= threshold


def _record_from_frozen(t, spec: StudySpec) -> TrialRecord:
    state = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED"}.get(t.state, "FAIL")
    result = t.user_attrs.get("result", {})
    value = t.value if t.value is not None else result.get("last_value")
    return TrialRecord(number=t.number, params=spec.space.values_from_params(t.params), state=state,
                       value=value, step=result.get("step"), wall_time=result.get("wall_time"),
                       reason=result.get("reason"), eval_mean=result.get("eval_mean"))


def _record_dict(r: TrialRecord) -> dict:
    return {"number": r.number, "state": r.state, "value": r.value, "step": r.step, "wall_time": r.wall_time,
            "eval_mean": r.eval_mean, "reason": r.reason, "params": r.params}


def write_trials_csv(path: Path, records: list[TrialRecord], spec: StudySpec) -> None:
    names = list(spec.space.names)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["number", "state", *names, spec.metric, "eval_return", "steps", "wall_time_s", "reason"])
        for r in records:
            writer.writerow([r.number, r.state, *(r.params.get(n) for n in names), r.value, r.eval_mean, r.step,
                             None if r.wall_time is None else round(r.wall_time, 3), r.reason or ""])
    tmp.replace(path)


def write_best_config(path: Path, spec: StudySpec, best: TrialRecord) -> None:
    if spec.agent is not None:
        from rltune.config import to_dict

        config = agent_config(spec, best.params)
        data = {"agent": spec.agent, **to_dict(config)}
    else:
        data = dict(best.params)
    header = (f"# best trial {best.number} of study {spec.name!r}: {spec.metric} = {best.value}\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))


class _LiveTable:
    """A live rich table of running trials, on a terminal."""

    def __init__(self, driver: StudyDriver):
        from rich.live import Live

        self.driver = driver
        self._live = Live(self._render(), refresh_per_second=4, transient=True)
        self._live.start()

    def _render(self):
        from rich.table import Table

        d = self.driver
        table = Table(title=f"study {d.spec.name}: {d._counted()}/{d.spec.num_trials} trials, "
                            f"{d.failures()} failed")
        for col in ("trial", *d.spec.space.names, "step", d.spec.metric):
            table.add_column(col)
        for run in d.running.values():
            r = run.record
            table.add_row(str(r.number), *(format_value(r.params.get(n)) for n in d.spec.space.names),
                          format_value(r.step), format_value(r.value))
        return table

    def refresh(self) -> None:
        self._live.update(self._render())

    def close(self) -> None:
        self._live.stop()


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_study(spec: StudySpec, study_dir: str | Path, *, storage: str | None = None, resume: bool = False,
              live: bool = False, eval_episodes: int = 10, population_size: int | None = None) -> StudyResult:
    """Python API: run (or resume) a study and return its trials and best trial."""
    prepare(spec)
    return StudyDriver(spec, Path(study_dir), storage=storage, resume=resume, live=live,
                       eval_episodes=eval_episodes, population_size=population_size).run()
