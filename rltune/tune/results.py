"""What a study shows a person: the trials table, the live view, trials.csv, best_config.yaml,
summary.json, and a read-only view of a study directory (for `rltune status` and `report`).

Everything here takes plain data (`TrialRow`s, or anything with the same attributes such as the
driver's trial records, or dicts) and the study spec, so the driver, `status` and `report`
render a study the same way. Nothing here writes the study storage.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

# Storage state names -> the table's short names (5 letters at most, so the column stays narrow).
SHORT_STATE = {"COMPLETE": "done", "PRUNED": "stop", "FAIL": "fail", "RUNNING": "run",
               "PAUSED": "pause", "WAITING": "wait"}
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass
class TrialRow:
    """One trial as shown to a person (one row of the table, one line of trials.csv)."""

    number: int
    state: str  # RUNNING | PAUSED | COMPLETE | PRUNED | FAIL
    params: dict[str, Any] = field(default_factory=dict)
    value: float | None = None  # the objective (last reported value while running)
    step: int | None = None
    wall_time: float | None = None
    eval_mean: float | None = None
    reason: str | None = None
    started: float | None = None  # POSIX seconds
    finished: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, metric), for plots
    # scheduler pauses: {"paused": POSIX s, "resumed": POSIX s or None, "step": env steps or None}
    pauses: list[dict[str, Any]] = field(default_factory=list)


def as_row(trial: Any) -> TrialRow:
    """A TrialRow from a TrialRow, a dict, or any object with the same attribute names (the
    driver's TrialRecord)."""
    if isinstance(trial, TrialRow):
        return trial
    get = trial.get if isinstance(trial, Mapping) else (lambda k, d=None: getattr(trial, k, d))
    values = {f.name: get(f.name) for f in fields(TrialRow)}
    values["params"] = dict(values["params"] or {})
    values["curve"] = list(values["curve"] or [])
    values["pauses"] = list(values["pauses"] or [])
    return TrialRow(**values)


def best_row(trials: Iterable[Any], goal: str = "maximize") -> TrialRow | None:
    """Best among completed and early-stopped trials (a stopped trial keeps its result); ties go
    to the completed trial."""
    candidates = [r for r in map(as_row, trials) if r.state in ("COMPLETE", "PRUNED") and _finite(r.value)]
    if not candidates:
        return None
    sign = 1 if goal == "maximize" else -1
    return max(candidates, key=lambda r: (sign * r.value, r.state == "COMPLETE", -r.number))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---------------------------------------------------------------- numbers at 80 columns
def fmt(value: Any) -> str:
    """A value in at most ~7 characters: 3 significant digits for floats (`1.23e-3`, `0.95`,
    `475`), `12.8k` / `1.5M` for large integers, `-` for none."""
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return _fmt_int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        if 1e-2 <= abs(value) < 1e3:
            return f"{value:.3g}"
        exponent = math.floor(math.log10(abs(value)))
        mantissa = round(value / 10 ** exponent, 2)
        if abs(mantissa) >= 10:  # 9.999 rounds to 10.0
            mantissa, exponent = mantissa / 10, exponent + 1
        return f"{mantissa:.3g}e{exponent}"
    return str(value)


def _fmt_int(n: int) -> str:
    if abs(n) < 10_000:
        return str(n)
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _fmt_wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}" if seconds < 1000 else f"{seconds:.0f}"


# ---------------------------------------------------------------- tables
def _table(header: list[str], body: list[list[str]], width: int, numeric: set[int]) -> list[str]:
    """Columns with no value in any row are dropped; names wider than the widest value are
    abbreviated (a legend line says so) when the table does not fit `width`; the last column
    (free text) is cut to fit."""
    keep = [j for j in range(len(header)) if any(row[j] not in ("-", "") for row in body)]
    header = [header[j] for j in keep]
    body = [[row[j] for j in keep] for row in body]
    numeric = {keep.index(j) for j in numeric if j in keep}
    legend = []
    widths = [max([len(h)] + [len(r[j]) for r in body]) for j, h in enumerate(header)]
    free_text = bool(header) and len(numeric) < len(header) and (len(header) - 1) not in numeric
    keep_text = min(widths[-1], 16) if free_text else widths[-1]  # a reason keeps 16 chars before names shrink
    if sum(widths[:-1]) + keep_text + 2 * (len(widths) - 1) > width:
        for j, h in enumerate(header):
            values = max([len(r[j]) for r in body] + [2])
            if len(h) > max(values, 6):
                short = _abbreviate(h, max(values, 6))
                legend.append(f"{short}={h}")
                header[j] = short
        widths = [max([len(h)] + [len(r[j]) for r in body]) for j, h in enumerate(header)]
    total = sum(widths) + 2 * (len(widths) - 1)
    if total > width and free_text:  # the last column is free text (reason): cut it
        widths[-1] = max(len(header[-1]), widths[-1] - (total - width))

    def line(cells):
        out = []
        for j, (c, w) in enumerate(zip(cells, widths)):
            c = c if len(c) <= w else c[: w - 1] + "~"
            out.append(c.rjust(w) if j in numeric else c.ljust(w))
        return "  ".join(out).rstrip()

    lines = [line(header)] + [line(r) for r in body]
    if legend:
        lines.append(_wrap("  ".join(legend), width))
    return lines


def _abbreviate(name: str, size: int) -> str:
    words = [w for w in name.replace("-", "_").split("_") if w]
    initials = "".join(w[0] for w in words)
    if len(words) > 1 and len(initials) <= size:
        return initials
    return name[:size]


def _wrap(text: str, width: int) -> str:
    """Wrap on spaces only, so `name=value` pairs are never broken."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False,
                                   subsequent_indent="  "))


def params_text(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def best_line(best: Any, metric: str, width: int = 80, label: str = "best") -> str:
    """`best trial 3: reward 500 (eval 500) learning_rate=1.2e-3 ...`, wrapped between params."""
    b = as_row(best)
    text = f"{label} trial {b.number}: {metric} {fmt(b.value)}"
    if b.eval_mean is not None:
        text += f" (eval {fmt(b.eval_mean)})"
    return _wrap(f"{text} {params_text(b.params)}", width)


def render_table(trials: Iterable[Any], param_names: Sequence[str], metric: str = "reward", *,
                 goal: str = "maximize", width: int = 80, title: str | None = None) -> str:
    """The trials table as plain text at most `width` columns wide, best trial marked `*`."""
    rows = sorted(map(as_row, trials), key=lambda r: r.number)
    best = best_row(rows, goal)
    header = ["#", "state", *param_names, metric, "eval", "steps", "wall s", "reason"]
    body = []
    for r in rows:
        mark = "*" if best is not None and r.number == best.number else ""
        body.append([f"{r.number}{mark}", SHORT_STATE.get(r.state, r.state.lower()),
                     *(fmt(r.params.get(n)) for n in param_names), fmt(r.value), fmt(r.eval_mean),
                     fmt(r.step), _fmt_wall(r.wall_time), r.reason or ""])
    numeric = set(range(2, len(header) - 1))
    lines = ([_wrap(title, width)] if title else []) + _table(header, body, width, numeric)
    if best is not None:
        lines.append(best_line(best, metric, width))
    else:
        lines.append("no trial has finished with a value yet")
    return "\n".join(lines)


def state_counts(trials: Iterable[Any]) -> dict[str, int]:
    counts = {s: 0 for s in ("RUNNING", "PAUSED", "COMPLETE", "PRUNED", "FAIL")}
    for r in map(as_row, trials):
        counts[r.state] = counts.get(r.state, 0) + 1
    return counts


def eta_seconds(trials: Iterable[Any], num_trials: int, elapsed: float, budget_steps: int | None) -> float | None:
    """Time left, from the study's pace so far: finished trials count 1, running and paused ones
    the fraction of `budget_steps` they reached. None until some work is done."""
    rows = list(map(as_row, trials))
    if not rows:
        return None
    done = sum(1.0 for r in rows if r.state in FINISHED)
    partial = 0.0
    if budget_steps:
        partial = sum(min(1.0, (r.step or 0) / budget_steps) for r in rows if r.state in ("RUNNING", "PAUSED"))
    work = done + partial
    if work <= 0 or elapsed <= 0:
        return None
    left = max(0.0, num_trials - work)
    if left == 0 and any(r.state in ("RUNNING", "PAUSED") for r in rows):
        left = sum(1 - min(1.0, (r.step or 0) / budget_steps) for r in rows
                   if r.state in ("RUNNING", "PAUSED")) if budget_steps else 0.0
    return left * elapsed / work


def status_line(trials: Iterable[Any], name: str, num_trials: int, elapsed: float, eta: float | None) -> str:
    c = state_counts(trials)
    finished = c["COMPLETE"] + c["PRUNED"] + c["FAIL"]
    kinds = [f"{c[s]} {word}" for s, word in (("COMPLETE", "done"), ("PRUNED", "stopped"), ("FAIL", "failed"))
             if c[s]]
    text = f"study {name}: {finished}/{num_trials} finished" + (f" ({', '.join(kinds)})" if kinds else "")
    text += f", {c['RUNNING']} running" + (f", {c['PAUSED']} paused" if c["PAUSED"] else "")
    active = c["RUNNING"] + c["PAUSED"] + c.get("WAITING", 0)
    text += f"; elapsed {_fmt_seconds(elapsed)}"
    if active:
        text += f", ETA {_fmt_seconds(eta)}" if eta is not None else ", ETA -"
    return text


def render_live(trials: Iterable[Any], param_names: Sequence[str], *, name: str, num_trials: int,
                metric: str = "reward", goal: str = "maximize", elapsed: float,
                budget_steps: int | None = None, width: int = 80) -> str:
    """The live view (driver on a terminal, and `rltune status`): counts, elapsed and ETA, best
    so far, then the running and paused trials with their last step and metric."""
    rows = sorted(map(as_row, trials), key=lambda r: r.number)
    eta = eta_seconds(rows, num_trials, elapsed, budget_steps)
    lines = [_wrap(status_line(rows, name, num_trials, elapsed, eta), width)]
    best = best_row(rows, goal)
    lines.append(best_line(best, metric, width, label="best so far") if best else "best so far: -")
    active = [r for r in rows if r.state in ("RUNNING", "PAUSED")]
    if active:
        header = ["#", "state", *param_names, "step", metric, "for"]
        now = time.time()
        body = [[str(r.number), SHORT_STATE[r.state], *(fmt(r.params.get(n)) for n in param_names),
                 fmt(r.step), fmt(r.value), _fmt_seconds(now - r.started if r.started else None)]
                for r in active]
        lines += _table(header, body, width, set(range(2, len(header))))
    return "\n".join(lines)


def tb_run_name(number: int, params: Mapping[str, Any], limit: int = 200) -> str:
    """A trial's TensorBoard run name (a directory name): `trial-3 learning_rate=1.51e-3 gamma=0.983`,
    so `tensorboard --logdir STUDY/trials` says which trial and params each curve is."""
    text = f"trial-{number} " + " ".join(f"{k}={fmt(v)}" for k, v in params.items())
    return text.strip().replace("/", "_").replace("\\", "_")[:limit]


# ---------------------------------------------------------------- files
def write_trials_csv(path: str | Path, trials: Iterable[Any], param_names: Sequence[str], metric: str) -> None:
    """trials.csv (full precision; written to a temporary file and renamed, so a reader never
    sees half a file)."""
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["number", "state", *param_names, metric, "eval_return", "steps", "wall_time_s", "reason"])
        for r in sorted(map(as_row, trials), key=lambda r: r.number):
            writer.writerow([r.number, r.state, *(r.params.get(n) for n in param_names), r.value, r.eval_mean,
                             r.step, None if r.wall_time is None else round(r.wall_time, 3), r.reason or ""])
    tmp.replace(path)


def write_best_config(path: str | Path, best: Any, *, study_name: str, metric: str,
                      config: Mapping[str, Any] | None = None, agent: str | None = None) -> None:
    """best_config.yaml: the best trial's full agent config (`config`, accepted by `rltune train
    <agent> --config`), or its params for an external trainer."""
    b = as_row(best)
    data = {"agent": agent, **config} if agent is not None and config is not None else dict(b.params)
    header = f"# best trial {b.number} of study {study_name!r}: {metric} = {b.value}\n"
    Path(path).write_text(header + yaml.safe_dump(data, sort_keys=False))


def trial_dict(trial: Any) -> dict[str, Any]:
    r = as_row(trial)
    return {"number": r.number, "state": r.state, "value": r.value, "step": r.step, "wall_time": r.wall_time,
            "eval_mean": r.eval_mean, "reason": r.reason, "params": r.params}


def write_summary(path: str | Path, trials: Iterable[Any], *, name: str, storage: str, goal: str = "maximize",
                  failed: int | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json; `failed` overrides the count of FAIL trials (the driver leaves interrupted
    trials out of it); `extra` keys are added (the best trial's reference evaluation)."""
    rows = list(map(as_row, trials))
    best = best_row(rows, goal)
    c = state_counts(rows)
    summary = {"name": name, "storage": storage, "trials": len(rows), "complete": c["COMPLETE"],
               "pruned": c["PRUNED"], "failed": c["FAIL"] if failed is None else failed,
               "best": trial_dict(best) if best else None, **(extra or {})}
    Path(path).write_text(json.dumps(summary, indent=2, default=str))
    return summary


# ---------------------------------------------------------------- reading a study directory
@dataclass
class StudyView:
    """A study as read from its directory and storage, without writing either."""

    study_dir: Path
    spec: Any  # StudySpec
    trials: list[TrialRow]
    started: float | None  # first trial's start (POSIX seconds)
    storage: str
    frozen: list = field(default_factory=list)  # Optuna FrozenTrials, for Optuna's own analyses

    @property
    def best(self) -> TrialRow | None:
        return best_row(self.trials, self.spec.goal)

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        if any(r.state in ("RUNNING", "PAUSED") for r in self.trials):
            return time.time() - self.started
        ends = [r.finished for r in self.trials if r.finished]
        return (max(ends) if ends else time.time()) - self.started


def readonly_url(url: str) -> str:
    """A SQLite URL opened read-only (SQLite refuses every write through it); other URLs as is."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and "mode=ro" not in url:
        path = url[len(prefix):]
        return f"sqlite:///file:{path}?mode=ro&uri=true"
    return url


def read_study(study_dir: str | Path, storage: str | None = None) -> StudyView:
    """Read a study directory: spec.yaml, the Optuna storage (read-only) and each trial's
    metrics.jsonl (the latest progress, which reaches the storage only at scheduler rungs)."""
    import optuna
    from optuna.trial import TrialState

    from rltune.errors import UsageError
    from rltune.tune.spec import load_spec

    study_dir = Path(study_dir)
    if not (study_dir / "spec.yaml").is_file():
        if (study_dir / "lock").is_file():  # the driver has taken the directory and not yet written it
            raise UsageError("STUDY_DIR", f"{study_dir}: the study is starting; try again in a moment")
        raise UsageError("STUDY_DIR", f"{study_dir} is not a study directory (no spec.yaml); "
                         "pass the --out directory of `rltune tune`")
    spec = load_spec(study_dir / "spec.yaml")
    url = storage or spec.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise UsageError("STUDY_DIR", f"{study_dir} has no study.db yet (the study has not started)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from sqlalchemy.exc import SQLAlchemyError

    not_ready = UsageError("STUDY_DIR", f"the study in {study_dir} is starting (its storage is not written "
                           "yet); try again in a moment")
    try:
        rdb = optuna.storages.RDBStorage(readonly_url(url), skip_compatibility_check=True,
                                         skip_table_creation=True)
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError):
        # A read-only connection cannot write Optuna's version row: the driver has not yet.
        raise not_ready from None
    try:
        try:
            study = optuna.load_study(study_name=spec.name, storage=rdb)
        except KeyError:
            raise UsageError("STUDY_DIR", f"study {spec.name!r} is not in {url}") from None
        except (optuna.exceptions.StorageInternalError, SQLAlchemyError):
            raise not_ready from None
        frozen = study.get_trials(deepcopy=False)
    finally:
        rdb.engine.dispose()
    rows = []
    for t in frozen:
        state = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED", TrialState.RUNNING: "RUNNING",
                 TrialState.WAITING: "WAITING"}.get(t.state, "FAIL")
        attrs = _flat_result(t.user_attrs)
        try:
            params = spec.space.values_from_params(t.params)
        except KeyError:
            params = dict(t.params)
        row = TrialRow(number=t.number, state=state, params=params,
                       value=t.value if t.value is not None else attrs.get("last_value"),
                       step=attrs.get("step"), wall_time=attrs.get("wall_time"), eval_mean=attrs.get("eval_mean"),
                       reason=attrs.get("reason"), started=_ts(t.datetime_start), finished=_ts(t.datetime_complete),
                       curve=sorted((int(s), float(v)) for s, v in t.intermediate_values.items()),
                       pauses=[pause_dict(p) for p in attrs.get("pauses") or []])
        _merge_progress(row, study_dir / "trials" / str(t.number), spec.metric)
        if row.state == "RUNNING" and row.pauses and row.pauses[-1]["resumed"] is None:
            row.state = "PAUSED"  # waiting at a scheduler barrier
        rows.append(row)
    starts = [r.started for r in rows if r.started]
    return StudyView(study_dir, spec, rows, min(starts) if starts else None, url, list(frozen))


def pause_dict(pause: Any) -> dict[str, Any]:
    """A recorded pause, from {"paused", "resumed", "step"} or [paused, resumed, step]."""
    if isinstance(pause, Mapping):
        return {"paused": pause.get("paused"), "resumed": pause.get("resumed"), "step": pause.get("step")}
    values = list(pause) + [None] * (3 - len(pause))
    return {"paused": values[0], "resumed": values[1], "step": values[2]}


def _flat_result(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Trial results from user attributes: flat keys (eval_mean, wall_time, step, reason, ...) or
    the older nested `result` dict. `pauses`: [{"paused": t0, "resumed": t1 or None, "step": s}]
    (POSIX seconds, env steps) when the driver records the scheduler's pauses."""
    out = dict(attrs.get("result") or {})
    out.update({k: v for k, v in attrs.items() if k != "result"})
    return out


def _ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl lines; a half-written last line (a run still writing) is skipped."""
    out = []
    try:
        with open(path) as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return out


def _merge_progress(row: TrialRow, trial_dir: Path, metric: str) -> None:
    """The storage holds intermediate values only where the driver flushed them; a trial's own
    log has every report: metrics.jsonl (built-in agents, one line per segment) or
    hypertune.metrics (external trainers). Use it for the curve and, while the trial runs, for
    its last step and metric."""
    lines = read_metrics(trial_dir / "metrics.jsonl")
    key = "step"
    if not lines:
        lines, key = read_metrics(trial_dir / "hypertune.metrics"), "global_step"
    lines = [m for m in lines if key in m]
    curve = [(int(m[key]), float(m[metric])) for m in lines if _finite(m.get(metric))]
    if len(curve) >= len(row.curve):
        row.curve = curve
    if row.state in ("RUNNING", "PAUSED", "WAITING"):
        if lines:
            row.step = int(lines[-1][key])
        if row.curve:
            row.step = max(row.step or 0, row.curve[-1][0])
            row.value = row.curve[-1][1]
