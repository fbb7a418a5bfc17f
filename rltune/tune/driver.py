"""The tuning driver's event loop: sampler -> executor -> scheduler -> storage.

The driver asks the sampler for parameters, submits trials to an executor (local processes, a
vmapped population, Ray actors), answers every intermediate report with the scheduler's
decision, and records results through `StudyStorage`, the only writer of the study storage.
A trial that raises, diverges or whose worker dies is FAILED with its reason, and the study goes
on until `max_failed_trials`.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from rltune import profile
from rltune.errors import UsageError
from rltune.profile import phase
from rltune.tune.executors.base import (Done, Exploited, ExecutorOptions, Failed, Report, Retried, Started,
                                        TrialTask, make_executor)
from rltune.tune.lineage import PBTLineage, write_json
from rltune.tune.pbt_rounds import DIVERGED, CheckpointPBT
from rltune.tune.resolve import (agent_config, base_config, make_scheduler_for, pbt_settings, steps_per_unit,
                                 trial_budget)
from rltune.tune.spec import StudySpec, dump_spec
from rltune.tune.storage import INTERRUPTED, StudyStorage, storage_url, trial_result_attrs
from rltune.tune.results import render_live, write_best_config, write_summary, write_trials_csv
from rltune.tune.study import StudyResult, TrialRecord, best_record


@dataclass
class _Running:
    optuna_trial: optuna.trial.Trial
    record: TrialRecord
    reported_boundaries: set = field(default_factory=set)
    pausing: bool = False  # the scheduler paused it at a barrier: it stops, keeping its checkpoint
    since: float | None = field(default_factory=time.time)  # running since (None: paused)
    ran_before: float = 0.0  # seconds it ran before its last pause

    def running_time(self, now: float) -> float:
        """Seconds it has run, its waits at a barrier excluded (for `trial_timeout`)."""
        return self.ran_before + (now - self.since if self.since is not None else 0.0)


class StudyDriver:
    def __init__(self, spec: StudySpec, study_dir: Path, *, storage: str | None = None, resume: bool = False,
                 live: bool = False, eval_episodes: int = 10, population_size: int | None = None):
        self.spec = spec
        self.study_dir = Path(study_dir)
        self.storage_url = storage_url(spec, self.study_dir, storage)
        self.storage = StudyStorage(self.storage_url, spec)
        self.resume = resume
        self.live = live
        self.eval_episodes = eval_episodes
        self.population_size = population_size
        self.scheduler = make_scheduler_for(spec)
        # rung/phase boundaries in the scheduler's unit, and the env steps where trials must report
        self.unit_steps = steps_per_unit(spec)
        self.budget_steps = trial_budget(spec)  # 0: an external trainer without budget_steps
        self.budget_units = (self.budget_steps // self.unit_steps) or 1 << 62
        self.boundaries = tuple(self.scheduler.boundaries())
        self.report_steps = tuple(b * self.unit_steps for b in self.boundaries)
        self.records: dict[int, TrialRecord] = {}
        self.running: dict[int, _Running] = {}
        self.paused: dict[int, _Running] = {}  # waiting at a barrier (successive halving, hyperband)
        self.executor = None
        self.threshold_reached = False
        self.stopped_by_max_time = False
        self.started = time.time()
        self.interrupt_requested = False  # set by Ctrl-C; the loop stops at its next safe point
        # the reference evaluation started before the loop ended: (trial number, its result)
        self._early_reference: tuple[int, _Background] | None = None
        self._stopped_references: list[_Background] = []  # early checks a better trial overtook
        # Optuna's grid sampler repeats points once the grid is used up: cap the trials at its size.
        self.max_trials = min(spec.num_trials, spec.space.grid_size()) if spec.sampler.name == "grid" \
            else spec.num_trials
        self.pbt = pbt_settings(spec, self.scheduler)
        self.lineage = PBTLineage(spec, self.pbt["names"]) if self.pbt else None
        # PBT through checkpoints (local and Ray executors): the driver's rounds at a barrier
        self.pbt_rounds = None
        if self.pbt:
            if resume:
                raise UsageError("--resume", "a PBT study cannot be resumed: its members train in lockstep "
                                 "and copy each other; start a new study")
            if spec.executor != "population":
                self.pbt_rounds = CheckpointPBT(self.pbt, self.pbt["names"], self.trial_dir)
            elif population_size is not None and population_size < self.max_trials:
                raise UsageError("--population-size", f"PBT trains all {self.max_trials} trials together as "
                                 f"one population: needs a population size >= trials, got {population_size}")
            self.pbt["num_trials"] = self.max_trials  # a grid may hold fewer points than trials
            if self.pbt_rounds is None:
                self.population_size = self.max_trials

    def executor_options(self) -> ExecutorOptions:
        s = self.spec
        return ExecutorOptions(parallel=s.parallel, population_size=self.population_size, address=s.address,
                               resources=s.resources, max_failures=s.max_failures, agent=s.agent,
                               num_trials=s.num_trials, population=s.population,
                               agent_config=agent_config(s) if s.agent else None, pbt=self.pbt is not None)

    # ------------------------------------------------------------ main loop
    def check_fresh(self) -> None:
        """A new study must not overwrite an old one: checked before anything is written."""
        if not self.resume and (self.study_dir / "study.db").exists():
            raise UsageError("--out", f"{self.study_dir} already holds a study; pass --resume to continue "
                             "it, or choose another --out")
        own_db = self.storage_url.startswith("sqlite:///" + str(self.study_dir.resolve()))
        if self.resume and own_db and not (self.study_dir / "study.db").exists():
            raise UsageError("--resume", f"there is no study to resume in {self.study_dir}")

    def run(self) -> StudyResult:
        self.check_fresh()
        with StudyLock(self.study_dir):
            self.check_fresh()  # again, holding the lock: another driver may have started it meanwhile
            return self._run()

    def _run(self) -> StudyResult:
        """The study, profiled (`rltune.profile`): the workers inherit STUDY/profile/ as the place
        for their tables; the driver merges them into STUDY/profile.json."""
        profile.reset()
        wall0, cpu0 = time.perf_counter(), time.process_time()  # a process may run several studies
        profile_dir = self.study_dir / "profile"
        previous = os.environ.get(profile.ENV_DIR)
        os.environ[profile.ENV_DIR] = str(profile_dir)
        try:
            with phase("storage"):
                result = self._run_profiled()
        finally:
            if previous is None:
                os.environ.pop(profile.ENV_DIR, None)
            else:
                os.environ[profile.ENV_DIR] = previous
        wall = time.perf_counter() - wall0
        profile.dump("driver", wall, profile_dir, cpu=time.process_time() - cpu0)
        profile.merge(profile_dir, self.study_dir / "profile.json", wall)
        return result

    def _run_profiled(self) -> StudyResult:
        # The workers start first: they import JAX (about a second each) while the storage opens.
        self.executor = make_executor(self.spec.executor, self.executor_options())
        try:
            with phase("start"):  # spawning workers; starting a local Ray takes seconds
                self.executor.start()
                hint = self.warm_up_hint()
                if hint is not None:  # the workers compile while the storage opens
                    self.executor.warm_up(hint)
            self._open_storage()
        except BaseException:  # e.g. a foreign database (UsageError): no worker outlives it
            self.executor.shutdown(force=True)
            raise
        return self._run_started()

    def _open_storage(self) -> None:
        from rltune.tune.samplers import make_sampler

        study = self.storage.open(resume=self.resume)
        (self.study_dir / "trials").mkdir(exist_ok=True)
        dump_spec(self.spec, self.study_dir / "spec.yaml")
        self.storage.import_previous()
        for t in self.storage.recover():
            self.records[t.number] = _record_from_frozen(t, self.spec)
            if self.records[t.number].reason != INTERRUPTED:
                self._replay(t)
        # A resumed study continues the sampler's sequence instead of replaying it: a seeded
        # sampler is reseeded from the seed and the number of trials already stored.
        seed = self.spec.sampler.seed
        if seed is not None and self.records:
            seed = (seed * 1_000_003 + len(study.trials)) % (2**31)
        study.sampler = make_sampler(self.spec.sampler.name, self.spec.space, seed, **self.spec.sampler.options)

    def _run_started(self) -> StudyResult:
        self.started = time.time()
        interrupted = False
        display = None
        previous_handlers = _catch_interrupt(self)
        try:
            if self.live:
                display = LiveView(self)
            while not self.interrupt_requested:
                self._enforce_time_limits()
                if self.interrupt_requested:
                    break
                self._launch()
                if not self.running:
                    if self.pbt_rounds is not None and (self.pbt_rounds.ready or self.pbt_rounds.waiting):
                        pass  # PBT members wait for a slot (a Ray actor being placed): poll
                    elif self.paused:
                        self._release_stuck_pauses()
                        continue
                    if self._done_launching() or self.executor.free_slots():
                        break
                    # not done, yet no slot: workers are still starting (a Ray actor being placed)
                self._poll(timeout=0.2)
                self._start_reference_early()
                if display:
                    display.refresh()
            if self.interrupt_requested:
                interrupted = True
                self._interrupt()
        finally:
            _restore_interrupt(previous_handlers)
            if display:
                display.close()
            self._flush_reports()  # also when the loop failed: the curves so far are kept
            # The best trial's reference evaluation runs while the workers exit (the records are
            # final once the loop has ended), unless it started early for this trial.
            best, early = self.best(), self._early_reference
            if early is not None and best is not None and early[0] == best.number:
                reference = early[1]
            else:
                self._stop_early_reference()  # another trial's: it must not share the core with this one
                reference = _Background(self.reference_eval, best)
            with phase("shutdown"):
                self.executor.shutdown(force=interrupted)
            with phase("eval"):
                reference = reference.result()
                for stopped in self._stopped_references:  # no evaluation thread left running past the study
                    stopped.join(timeout=5.0)
            self._write_outputs(reference)
        return StudyResult(self.study_dir, self.sorted_records(), self.best(),
                           interrupted and not self.stopped_by_max_time)

    def _start_reference_early(self) -> None:
        """At the study's end a worker idles while the last trials run (nothing is left to
        launch): the best finished trial's reference evaluation starts then, on that idle core,
        instead of after the last trial. Used only if that trial is still the best at the end
        (its files no longer change: it finished, and nothing paused can resume); one that a
        better trial overtakes is stopped."""
        if self.pbt is not None or self.paused or not self.running or not self._done_launching() \
                or not self.executor.idle_workers():
            return
        best, early = self.best(), self._early_reference
        if best is None or (early is not None and early[0] == best.number):
            return
        self._stop_early_reference()
        self._early_reference = (best.number, _Background(self.reference_eval, best))

    def _stop_early_reference(self) -> None:
        """Stop the early reference evaluation, if one runs; it is joined before the outputs."""
        if self._early_reference is not None:
            self._early_reference[1].stop()
            self._stopped_references.append(self._early_reference[1])
            self._early_reference = None

    def _flush_reports(self) -> None:
        try:
            self.storage.flush()
        except Exception as exc:  # noqa: BLE001 - the storage may be what failed: the outputs still get written
            print(f"rltune: could not write the last intermediate values: {type(exc).__name__}: {exc}",
                  file=sys.stderr)

    def _replay(self, t) -> None:
        """Rebuild the scheduler's rungs/phases from a stored trial's intermediate values."""
        crossed: set = set()
        for step, value in sorted(t.intermediate_values.items()):
            for boundary in self._crossings(step, crossed):
                self.scheduler.on_report(t.number, boundary, value)
        self.scheduler.on_complete(t.number)

    def _crossings(self, step: int, seen: set):
        """The rung/phase boundaries reached at `step` that `seen` does not hold yet, in order;
        each is added to `seen` as it is yielded (a caller that stops early leaves the rest)."""
        progress = step // self.unit_steps
        for boundary in self.boundaries:
            if boundary <= progress and boundary not in seen and boundary < self.budget_units:
                seen.add(boundary)
                yield boundary

    def _enforce_time_limits(self) -> None:
        now = time.time()
        if self.spec.max_time is not None and now - self.started > self.spec.max_time:
            self.interrupt_requested = True  # running trials end as interrupted; --resume re-runs them
            self.stopped_by_max_time = True
            return
        if self.spec.trial_timeout is None:
            return
        for run in list(self.running.values()):
            if run.running_time(now) > self.spec.trial_timeout:
                self.executor.kill(run.record.number)
                self._finish(run, "FAIL", reason=f"timeout after {self.spec.trial_timeout:g} s")

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

    def _launch(self) -> None:
        self._settle_paused()
        if self.pbt_rounds is not None:
            self._pbt_round()
        while self.executor.free_slots() and self.paused and self._resume_one():
            pass
        while self.executor.free_slots() and not self._done_launching():
            trial = self.storage.ask()
            params = self.spec.space.suggest(trial)
            record = TrialRecord(number=trial.number, params=params)
            self.records[trial.number] = record
            if self.lineage is not None:
                self.lineage.start(trial.number, params)
            if self.pbt_rounds is not None:
                self.pbt_rounds.start(trial.number, agent_config(self.spec, params))
            self.running[trial.number] = _Running(trial, record)
            self.executor.submit(self._task(record))

    def warm_up_hint(self) -> TrialTask | None:
        """A task like the study's first ones, for the workers to compile its programs before
        any trial is sampled: the searched params at their lowest (or first) values, which
        give the same programs as any sampled value, since none of them is static (a static
        one fixes shapes: the hint could warm up programs no trial uses). None when that does
        not hold, for an external trainer and on a resume (its trials continue from checkpoints)."""
        from rltune.config import static_fields

        if self.resume or self.spec.command is not None or not self.spec.agent:
            return None
        from rltune.agents import get_agent

        if set(self.spec.space.names) & static_fields(get_agent(self.spec.agent).Config):
            return None
        params = {p.name: p.low if p.kind in ("float", "int") else p.values[0] for p in self.spec.space}
        return self._task(TrialRecord(number=-1, params=params))

    def trial_dir(self, number: int) -> Path:
        return (self.study_dir / "trials" / str(number)).resolve()

    def _task(self, record: TrialRecord, resume: bool = False) -> TrialTask:
        config, eval_episodes = {**base_config(self.spec), **record.params}, self.eval_episodes
        if self.pbt_rounds is not None:  # its traced values now; no evaluation at a pause
            config.update(self.pbt_rounds.config(record.number) if resume else {})
            if self._pbt_boundary_ahead(record):
                eval_episodes = 0
        return TrialTask(trial_id=record.number, trial_dir=str(self.trial_dir(record.number)),
                         params=record.params, agent=self.spec.agent,
                         config=config, command=self.spec.command,
                         fixed=dict(self.spec.fixed) if self.spec.command else {}, trainer=self.spec.trainer,
                         metric=self.spec.metric, goal=self.spec.goal, report_steps=self.report_steps,
                         eval_episodes=eval_episodes, resume=resume, pbt=self.pbt)

    def _settle_paused(self) -> None:
        """Paused trials that lost at their barrier end as PRUNED, keeping their last value."""
        stopped = set(self.scheduler.stopped())
        for number in [n for n in self.paused if n in stopped]:
            run = self.paused.pop(number)
            self.running[number] = run
            self._finish(run, "PRUNED")

    def _resume_one(self) -> bool:
        """Resume one paused trial that won at its barrier, from its last checkpoint."""
        ready = self.pbt_rounds.ready if self.pbt_rounds is not None else None
        for number in list(ready) if ready is not None else self.scheduler.resumable():
            if number in self.paused:
                if ready is not None:
                    ready.remove(number)
                run = self.paused.pop(number)
                run.pausing = False
                run.since = time.time()
                run.record.state = "RUNNING"
                run.record.timeline.append([time.time(), "resubmit", run.record.step or 0])
                self.running[number] = run
                self.executor.submit(self._task(run.record, resume=True))
                return True
        return False

    def _release_stuck_pauses(self) -> None:
        """Nothing runs and no barrier can resolve (fewer trials than a rung needs): the paused
        trials keep what they reached, as PRUNED."""
        self._settle_paused()
        if self.running or not self.paused or self.scheduler.resumable():
            return
        for number in list(self.paused):
            run = self.paused.pop(number)
            self.running[number] = run
            self.scheduler.on_complete(number)
            self._finish(run, "PRUNED")

    def _poll(self, timeout: float) -> None:
        due = self.storage.seconds_to_flush()
        with phase("wait"):
            events = self.executor.events(timeout if due is None else min(timeout, due))
        for event in events:  # decisions first: a trial waits for its answer, not for the disk
            self._handle(event)
        if self.storage.seconds_to_flush() == 0.0:
            self.storage.flush()

    def _handle(self, event) -> None:
        run = self.running.get(event.trial_id)
        if run is None:
            if isinstance(event, Report):  # a trial we already ended (timeout): let its worker go on
                self.executor.decide(event.trial_id, "stop")
            return
        now, rec = time.time(), run.record
        if isinstance(event, Report):
            rec.timeline.append([now, "report", event.step])
            decision = self._decide(run, event.step, event.value)
            if event.answer:  # the trial waits for it (its report crossed a scheduler boundary)
                self.executor.decide(event.trial_id, decision)
        elif isinstance(event, Started):
            rec.node = event.node
            run.since = now
            rec.timeline.append([now, "resume" if rec.timeline else "start", rec.step or 0])
        elif isinstance(event, Retried):
            rec.timeline.append([now, "retry", rec.step or 0])
            run.record.retries.append(f"{event.reason} (attempt {event.attempt}, "
                                      f"{'from checkpoint' if event.from_checkpoint else 'restarted'})")
        elif isinstance(event, Done) and run.pausing:
            self._pause(run, now, event.step)
        elif isinstance(event, Failed) and self.pbt_rounds is not None and event.reason.startswith(DIVERGED) \
                and self._pbt_boundary_ahead(rec):
            # PBT: replaced by a copy of a top member at the barrier ahead, instead of failing
            self.pbt_rounds.arrive(event.trial_id, math.nan, rec.step or 0, diverged=True)
            rec.timeline.append([now, "diverged", rec.step or 0])
            self._pause(run, now, rec.step or 0)
        elif isinstance(event, Done):
            self._finish(run, "PRUNED" if event.status == "stopped" else "COMPLETE", value=event.value,
                         step=event.step, wall_time=event.wall_time, eval_mean=event.eval_mean)
        elif isinstance(event, Failed):
            self._finish(run, "FAIL", reason=event.reason)
        elif isinstance(event, Exploited) and self.lineage is not None:
            rec.timeline.append([now, "exploit", event.step])
            self.lineage.exploited(event)

    def _pause(self, run: _Running, now: float, step: int) -> None:
        rec = run.record
        rec.timeline.append([now, "pause", step])
        self.storage.set_attrs(run.optuna_trial, {"pauses": rec.pauses})  # `rltune status` shows it
        run.ran_before += now - run.since
        run.since = None
        del self.running[rec.number]
        rec.state = "PAUSED"
        self.paused[rec.number] = run

    # ------------------------------------------------------------ PBT through checkpoints
    def _pbt_boundary_ahead(self, record: TrialRecord) -> bool:
        return any(b > (record.step or 0) for b in self.report_steps)

    def _pbt_round(self) -> None:
        """The barrier: once every member is paused at the same interval boundary (none runs,
        none is left to launch), exploit/explore through their checkpoints; all then resume."""
        if self.running or not self.pbt_rounds.at_barrier() or not self._done_launching():
            return
        from rltune.config import to_dict

        def config_of(number: int, hps: dict) -> dict:
            return to_dict(agent_config(self.spec, {**self.records[number].params, **hps}))

        copies, lost = self.pbt_rounds.round(config_of)
        now = time.time()
        for event in copies:
            run = self.paused[event.trial_id]
            run.record.timeline.append([now, "exploit", event.step])
            self.lineage.exploited(event)
            # it resumes at the source's step (a diverged member had not reached the boundary)
            run.record.step = event.step
            for _ in self._crossings(event.step, run.reported_boundaries):
                pass
        for number in lost:
            run = self.paused.pop(number)
            self.running[number] = run
            self._finish(run, "FAIL", reason="diverged, and no healthy member to copy")

    def _decide(self, run: _Running, step: int, value: float) -> str:
        """Record an intermediate value; ask the scheduler at each boundary crossed."""
        run.record.step, run.record.value = step, value
        if math.isfinite(value):
            self.storage.report(run.optuna_trial, value, step)
        if self.spec.stop.get("metric_threshold") is not None and _reaches(value, self.spec):
            self.threshold_reached = True
        decision, crossed = "continue", False
        for boundary in self._crossings(step, run.reported_boundaries):
            crossed = True
            decision = self.scheduler.on_report(run.record.number, boundary, value)
            if decision != "continue":
                break
        if crossed and self.pbt_rounds is not None:  # PBT: wait at the barrier for the others
            self.pbt_rounds.arrive(run.record.number, value, step)
            decision = "pause"
        if decision == "pause":
            if self.spec.command is not None:
                # An external trainer cannot be resumed from our checkpoint: it is stopped.
                return "stop"
            run.pausing = True  # the runner stops here with its checkpoint; resumed if it wins
            return "stop"
        return decision

    def _finish(self, run: _Running, state: str, *, value=None, step=None, wall_time=None,
                eval_mean=None, reason=None) -> None:
        rec = run.record
        rec.state = state
        rec.value = value if value is not None else rec.value
        rec.step = step if step is not None else rec.step
        rec.wall_time = wall_time if wall_time is not None else time.time() - rec.started
        rec.eval_mean, rec.reason = eval_mean, reason
        rec.timeline.append([time.time(), state.lower(), rec.step or 0])
        pbt_attrs = self.lineage.attrs(rec.number) if self.lineage is not None else {}
        if pbt_attrs:
            write_json(self.trial_dir(rec.number) / "pbt.json", pbt_attrs)
        self.storage.finish(run.optuna_trial, state, rec.value, {
            "reason": reason, "eval_mean": eval_mean, "wall_time": rec.wall_time, "step": rec.step,
            "last_value": rec.value, "trial_dir": str(self.trial_dir(rec.number)), "node": rec.node,
            "retries": rec.retries or None, "timeline": rec.timeline, "pauses": rec.pauses or None,
            **pbt_attrs})
        if state in ("COMPLETE", "PRUNED") and rec.value is not None and _reaches(rec.value, self.spec):
            self.threshold_reached = True
        self.scheduler.on_complete(rec.number)
        if self.pbt_rounds is not None:
            self.pbt_rounds.leave(rec.number)
        del self.running[rec.number]
        self._write_table()

    def _write_table(self) -> None:
        write_trials_csv(self.study_dir / "trials.csv", self.sorted_records(), self.spec.space.names,
                         self.spec.metric)

    def _interrupt(self) -> None:
        self.running.update(self.paused)
        self.paused.clear()
        for run in list(self.running.values()):
            self._finish(run, "FAIL", reason=INTERRUPTED)

    # ------------------------------------------------------------ results
    def sorted_records(self) -> list[TrialRecord]:
        return [self.records[k] for k in sorted(self.records)]

    def best(self) -> TrialRecord | None:
        return best_record(self.records.values(), self.spec.goal)

    def _write_outputs(self, reference: dict | None) -> None:
        from rltune.config import to_dict

        records = self.sorted_records()
        self._write_table()
        best = self.best()
        write_summary(self.study_dir / "summary.json", records, name=self.spec.name, storage=self.storage_url,
                      goal=self.spec.goal, failed=self.failures(),
                      extra={"best_reference_eval": reference} if reference else None)
        if best is not None:
            # PBT: the best member's schedule (its ancestor's start values and every change since)
            replay = self.lineage.replay_params(best.number, self.records) if self.lineage is not None else None
            params = replay if replay is not None else best.params
            config = to_dict(agent_config(self.spec, params)) if self.spec.agent else None
            write_best_config(self.study_dir / "best_config.yaml", best, study_name=self.spec.name,
                              metric=self.spec.metric, config=config, agent=self.spec.agent)

    def reference_eval(self, best: TrialRecord | None, stop=None) -> dict | None:
        """Trials evaluate on the env as trained (gymnax, compiled); the best one is checked on
        the reference simulator (its Gymnasium twin) with the same episodes, final policy.
        `stop()` True: the result is no longer wanted (an error that nobody reads)."""
        from rltune.envs import env_info
        from rltune.evaluate import eval_backend

        if best is None or not self.spec.agent or self.eval_episodes <= 0 or best.state not in ("COMPLETE", "PRUNED"):
            return None
        try:
            from rltune.policy import load_agent
            from rltune.runner import evaluate_params

            # (no profile phase: this runs in a thread beside the driver's "shutdown")
            agent = load_agent(self.trial_dir(best.number), which="last")
            info = env_info(agent.config.env, agent.config.backend)
            if eval_backend(agent.config.env, info.backend)[1] == info.backend:
                return None  # the trials already evaluated on the reference simulator
            result = evaluate_params(agent.agent, agent.config, agent.params, self.eval_episodes, 10_000,
                                     stop=stop)
            return {"trial": best.number, **result}
        except Exception as exc:  # noqa: BLE001 - a missing checkpoint must not lose the study's outputs
            return {"trial": best.number, "error": f"{type(exc).__name__}: {exc}"}


class _Background:
    """`fn(*args, stop)` in a daemon thread (Ctrl-C or an exit need not wait for it), where
    `stop()` tells whether `stop` was called here (`fn` may end early then); `result()` waits
    for its result or raises its exception. No profile phase may be used inside `fn`: phases
    are per thread."""

    def __init__(self, fn, *args, name: str = "rltune-reference-eval"):
        self._box: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, (*args, self._stop.is_set)), name=name,
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for a stopped evaluation to end at its next step."""
        self._thread.join(timeout)

    def _run(self, fn, args) -> None:
        try:
            self._box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._box["error"] = exc

    def result(self):
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["result"]


class LiveView:
    """The live view on a terminal (results.render_live): counts, ETA, best so far, running trials."""

    def __init__(self, driver: StudyDriver):
        from rich.live import Live

        self.driver = driver
        self._live = Live(self._render(), refresh_per_second=4, transient=True)
        self._live.start()

    def _render(self):
        from rich.text import Text

        d = self.driver
        return Text(render_live(d.sorted_records(), d.spec.space.names, name=d.spec.name, num_trials=d.max_trials,
                                metric=d.spec.metric, goal=d.spec.goal, elapsed=time.time() - d.started,
                                budget_steps=d.budget_steps or None))

    def refresh(self) -> None:
        self._live.update(self._render())

    def close(self) -> None:
        self._live.stop()


class StudyLock:
    """One driver per study directory: an exclusive `flock` on STUDY/lock holding the driver's
    pid. The kernel drops the lock when the driver dies, so a killed driver never blocks
    `--resume`. A second driver exits with status 2 naming the holder."""

    def __init__(self, study_dir: Path):
        self.study_dir = study_dir
        self._fd = None
        self._created_dir = False

    def __enter__(self) -> "StudyLock":
        import fcntl
        import os

        self._created_dir = not self.study_dir.exists()
        self.study_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.study_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UsageError("--out", f"{self.study_dir} is in use by another rltune driver (pid {holder}); "
                             "wait for it to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import os
        import shutil

        os.close(self._fd)
        if exc_type is UsageError and self._created_dir and not (self.study_dir / "study.db").exists():
            shutil.rmtree(self.study_dir, ignore_errors=True)  # refused before anything was written


def _catch_interrupt(driver: StudyDriver):
    """Ctrl-C (and SIGTERM) ask the driver to stop at a safe point (never in the middle of a
    storage write); a second one interrupts at once."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if driver.interrupt_requested:
            raise KeyboardInterrupt
        driver.interrupt_requested = True

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_interrupt(previous) -> None:
    import signal

    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)


def _reaches(value: float, spec: StudySpec) -> bool:
    threshold = spec.stop.get("metric_threshold")
    if threshold is None or value is None or not math.isfinite(value):
        return False
    return value >= threshold if spec.goal == "maximize" else value <= threshold


def _record_from_frozen(t, spec: StudySpec) -> TrialRecord:
    from optuna.trial import TrialState

    state = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED"}.get(t.state, "FAIL")
    result = trial_result_attrs(t)
    value = t.value if t.value is not None else result.get("last_value")
    return TrialRecord(number=t.number, params=spec.space.values_from_params(t.params), state=state,
                       value=value, step=result.get("step"), wall_time=result.get("wall_time"),
                       reason=result.get("reason"), eval_mean=result.get("eval_mean"),
                       node=result.get("node"), retries=list(result.get("retries") or []),
                       timeline=list(result.get("timeline") or []))
