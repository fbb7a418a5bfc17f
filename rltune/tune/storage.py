"""The study storage (an Optuna RDB): the ONLY code that writes it.

A SQLite file in the study directory by default, so optuna-dashboard opens it; any SQLAlchemy
URL with `--storage` (PostgreSQL for a cluster). Each trial's results are flat user attributes
(eval_mean, wall_time, steps, reason, trial_dir, ...) that the dashboard can sort.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from rltune.errors import UsageError
from rltune.tune.spec import StudySpec, spec_to_dict

INTERRUPTED = "interrupted"
# Intermediate values reach the storage in batches, at most this many seconds late: a transaction
# per value (Optuna's `Trial.report`) costs the driver's CPU, which shares the cores with the workers.
FLUSH_SECONDS = 1.0
RESULT_ATTRS = ("reason", "eval_mean", "wall_time", "step", "last_value", "trial_dir", "node", "retries",
                "timeline", "pauses")


def storage_url(spec: StudySpec, study_dir: Path, override: str | None) -> str:
    url = override or spec.storage
    return url or f"sqlite:///{(study_dir / 'study.db').resolve()}"


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


class _RowWriter:
    """Optuna's rows for running trials, written by statements of our own: a flush's intermediate
    values in one INSERT, a trial's user attributes in one upsert. Optuna's RDB storage writes
    each value through its ORM (a query for the trial, one for the row, then the insert: about
    0.6 ms of the driver's CPU per value, 19 values a trial in the 32-trial benchmark) and each
    user attribute in a transaction of its own. The rows are the ones Optuna writes (its own models' tables and
    stored representation), so Optuna, optuna-dashboard and `rltune` read them the same.
    SQLite and PostgreSQL (their INSERT ... ON CONFLICT); `for_storage` gives None elsewhere."""

    def __init__(self, storage: optuna.storages.RDBStorage, insert):
        from optuna.storages._rdb import models

        self.engine = storage.engine
        self.insert = insert
        self.trials = models.TrialModel.__table__
        self.values = models.TrialIntermediateValueModel.__table__
        self.attrs = models.TrialUserAttributeModel.__table__
        self.stored_repr = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr

    @classmethod
    def for_storage(cls, storage) -> "_RowWriter | None":
        if not isinstance(storage, optuna.storages.RDBStorage):
            return None
        try:
            if storage.engine.name == "sqlite":
                import sqlite3

                if sqlite3.sqlite_version_info < (3, 24, 0):  # no upsert
                    return None
                from sqlalchemy.dialects.sqlite import insert
            elif storage.engine.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                return None
            return cls(storage, insert)
        except (ImportError, AttributeError):  # an Optuna whose internals moved: Optuna's own writes
            return None

    def _all_running(self, connection, trial_ids: set[int]) -> bool:
        """Optuna's rule: a finished trial is not updated. Ours then writes nothing and returns
        False; Optuna's writes, which follow, raise its error."""
        from sqlalchemy import select

        rows = connection.execute(select(self.trials.c.state).where(self.trials.c.trial_id.in_(trial_ids))).all()
        return len(rows) == len(trial_ids) and not any(TrialState(state).is_finished() for (state,) in rows)

    def intermediate_values(self, reports: list[tuple[int, float, int]]) -> bool:
        """(trial id, value, step) rows, in one transaction; a step a trial already stored keeps
        its first value. False: nothing was written (a trial is finished)."""
        rows = []
        for trial_id, value, step in reports:
            stored, kind = self.stored_repr(float(value))
            rows.append({"trial_id": trial_id, "step": int(step), "intermediate_value": stored,
                         "intermediate_value_type": kind})
        statement = self.insert(self.values).on_conflict_do_nothing(index_elements=["trial_id", "step"])
        with self.engine.begin() as connection:
            if not self._all_running(connection, {r["trial_id"] for r in rows}):
                return False
            connection.execute(statement, rows)
        return True

    def user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> bool:
        """A trial's user attributes (JSON, as Optuna stores them), in one transaction."""
        rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
        statement = self.insert(self.attrs)
        statement = statement.on_conflict_do_update(index_elements=["trial_id", "key"],
                                                    set_={"value_json": statement.excluded.value_json})
        with self.engine.begin() as connection:
            if not self._all_running(connection, {trial_id}):
                return False
            connection.execute(statement, rows)
        return True


def _write_in_one_transaction(storage, reports) -> bool:
    """`trial.report` for each of `reports`, in one transaction of Optuna's RDB storage (its
    per-value writer without the commit), for the databases `_RowWriter` does not write (MySQL);
    False when that is not possible here (another storage, an Optuna without those internals,
    an error): then nothing was written."""
    from optuna.storages._rdb import storage as rdb

    write = getattr(storage, "_set_trial_intermediate_value_without_commit", None)
    session_scope = getattr(rdb, "_create_scoped_session", None)
    if not isinstance(storage, optuna.storages.RDBStorage) or write is None or session_scope is None:
        return False
    try:
        with session_scope(storage.scoped_session) as session:
            for trial, value, step in reports:
                write(session, trial._trial_id, int(step), float(value))
    except Exception:  # noqa: BLE001 - rolled back: the caller writes them one by one
        return False
    return True


def trial_result_attrs(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A stored trial's result attributes (flat; older studies kept them in one `result` dict)."""
    attrs = dict(trial.user_attrs.get("result") or {})
    attrs.update({k: trial.user_attrs[k] for k in RESULT_ATTRS if k in trial.user_attrs})
    return attrs


class StudyStorage:
    """One study in one Optuna storage, written by the driver alone."""

    def __init__(self, url: str, spec: StudySpec):
        self.url = url
        self.spec = spec
        self._pending_reports: list[tuple[optuna.trial.Trial, float, int]] = []
        self._first_pending = 0.0  # when the oldest buffered report came
        self._reported: dict[int, set[int]] = {}  # trial id -> the steps it reported
        self.study: optuna.Study | None = None
        self._waiting = True  # the study may hold enqueued trials (`ask`)
        self._writer: _RowWriter | None = None

    def open(self, *, resume: bool) -> optuna.Study:
        """Create or load the study (the driver sets its sampler once it knows the stored trials)."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self._storage = open_storage(self.url)
            self._writer = _RowWriter.for_storage(self._storage)
            names = {s.study_name for s in optuna.get_all_study_summaries(self._storage)}
        except Exception as exc:  # sqlalchemy/optuna errors: a corrupt or foreign database
            raise UsageError("--storage", f"cannot open the study storage {self.url}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}; "
                             "is it an rltune study? choose another --out") from None
        if self.spec.name in names and not resume:
            raise UsageError("--resume", f"study {self.spec.name!r} already exists in {self.url}; "
                             "pass --resume to continue it or choose another --out / name")
        if resume and self.spec.name not in names and self.url.endswith("study.db"):
            found = ", ".join(sorted(names)) or "none"
            raise UsageError("--resume", f"no study named {self.spec.name!r} in {self.url} (found: {found}); "
                             "resume with the spec that started it")
        study = optuna.create_study(storage=self._storage, study_name=self.spec.name,
                                    direction=self.spec.direction, load_if_exists=True)
        study.set_user_attr("spec", json.loads(json.dumps(spec_to_dict(self.spec), default=str)))
        with warnings.catch_warnings():  # experimental in Optuna; names the objective in the dashboard
            warnings.simplefilter("ignore")
            study.set_metric_names([self.spec.metric])
        self.study = study
        return study

    # ------------------------------------------------------------ trials
    def ask(self) -> optuna.trial.Trial:
        """Optuna's `Study.ask`, less its look for enqueued trials once none waits: that look
        reads every unfinished trial back from the storage, each ask (5 ms of the driver's CPU,
        which the workers share, with 32 trials running). rltune is the storage's only writer
        and enqueues only a resume's re-runs (`recover`): once none waits, none comes."""
        study = self.study
        if self._waiting:
            self._waiting = bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        thread_local, study_id = getattr(study, "_thread_local", None), getattr(study, "_study_id", None)
        # Optuna's own ask whenever its internals are not the ones this was written against
        if self._waiting or study_id is None or not hasattr(thread_local, "cached_all_trials"):
            return study.ask()
        thread_local.cached_all_trials = None  # as in Study.ask: the sampler reads every trial afresh
        return optuna.Trial(study, study._storage.create_new_trial(study_id))

    def report(self, trial: optuna.trial.Trial, value: float, step: int) -> None:
        """Buffered: a trial waits for the driver's decision, not for the disk (see `flush`).
        A step reported again (a retried trial replaying from its checkpoint) keeps its first
        value, as Optuna's `Trial.report` and the schedulers do."""
        steps = self._reported.setdefault(trial._trial_id, set())
        if step in steps:
            return
        steps.add(step)
        if not self._pending_reports:
            self._first_pending = time.monotonic()
        self._pending_reports.append((trial, value, step))

    def seconds_to_flush(self) -> float | None:
        """Seconds until the buffered reports are due in the storage (None: nothing buffered)."""
        if not self._pending_reports:
            return None
        return max(0.0, self._first_pending + FLUSH_SECONDS - time.monotonic())

    def flush(self) -> None:
        """Write the buffered intermediate values: one statement where the storage allows
        (`_RowWriter`), else one transaction of Optuna's writes, else `Trial.report` for each."""
        pending, self._pending_reports = self._pending_reports, []
        if not pending or self._write(lambda w: w.intermediate_values([(t._trial_id, v, s) for t, v, s in pending])):
            return
        if _write_in_one_transaction(self._storage, pending):
            return
        for trial, value, step in pending:
            trial.report(value, step)

    def set_attrs(self, trial: optuna.trial.Trial, attrs: dict[str, Any]) -> None:
        """Flat user attributes, in one transaction where the storage allows."""
        if not attrs or self._write(lambda w: w.user_attrs(trial._trial_id, attrs)):
            return
        for key, value in attrs.items():
            self._storage.set_trial_user_attr(trial._trial_id, key, value)

    def _write(self, write) -> bool:
        """`write(self._writer)`; False when there is no writer for this storage or it wrote
        nothing (then Optuna's own writes follow, and raise what they raise)."""
        if self._writer is None:
            return False
        try:
            return write(self._writer)
        except Exception:  # noqa: BLE001 - rolled back: Optuna's writes follow
            return False

    def finish(self, trial: optuna.trial.Trial, state: str, value: float | None, attrs: dict[str, Any]) -> None:
        """state: COMPLETE | PRUNED | FAIL; `attrs` become flat user attributes."""
        self.flush()
        self.set_attrs(trial, {k: v for k, v in attrs.items() if v is not None})
        if state == "COMPLETE":
            self.study.tell(trial, value)
        elif state == "PRUNED":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    # ------------------------------------------------------------ resume
    def recover(self) -> list[optuna.trial.FrozenTrial]:
        """Trials left RUNNING by an interrupted driver are marked FAILED (interrupted) and queued
        again with the same parameters. Returns every finished trial."""
        study = self.study
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.RUNNING:  # the driver was killed while it ran
                self._storage.set_trial_user_attr(t._trial_id, "reason", INTERRUPTED)
                study.tell(t.number, state=TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
        requeued = {t.user_attrs.get("requeued_from") for t in trials}
        for t in trials:
            if t.state == TrialState.FAIL and trial_result_attrs(t).get("reason") == INTERRUPTED \
                    and t.number not in requeued:  # re-run with the same parameters, once
                study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
                self._waiting = True
                # the grid sampler knows a point by its grid_id: the re-run takes the same one
                waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[-1]
                for key in ("grid_id", "search_space"):
                    if key in t.system_attrs:
                        self._storage.set_trial_system_attr(waiting._trial_id, key, t.system_attrs[key])
        return [t for t in study.get_trials(deepcopy=False)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]

    def import_previous(self) -> None:
        """resumePreviousJobId / resume_from: reuse the completed trials of an earlier study."""
        study = self.study
        if not self.spec.resume_from or study.user_attrs.get("imported_from") == self.spec.resume_from:
            return
        prev_dir = Path(self.spec.resume_from)
        url = f"sqlite:///{(prev_dir / 'study.db').resolve()}" if prev_dir.is_dir() else self.url
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
