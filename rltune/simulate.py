"""Replay recorded learning curves through schedulers: `rltune simulate`.

A discrete-event model of a cluster with W slots. The N workers (one recorded curve each)
start in order as slots free up; a running worker advances to its next boundary (the
scheduler's rungs / phase ends, or the end of its curve), reports the curve's value there and
obeys the answer:

- ``"continue"``: it keeps its slot and runs on to the next boundary;
- ``"stop"``: it frees its slot, done;
- ``"pause"``: it frees its slot and waits (barrier schedulers); when the scheduler lists it
  as resumable it takes the next free slot again, paying ``switch_cost`` seconds of slot time
  first (what a pause and a resume cost on a real cluster: checkpoint save and load, a
  recompile, warm-up; 0 by default), and if the barrier decides against it, it is stopped where
  it stands.

Free slots go first to resumable paused workers (lowest id first), then to workers that have
not started, in order. Events at the same instant are handled in the order they were
scheduled. Compute is slot-seconds actually spent running; ``alpha`` is compute divided by the
compute of running every worker to the end of its curve. The best score is the best last
reported value of any worker (stopped ones count, as in the HyperTrick spec); ``time_to_best``
is the simulated time at which that value was reported.

Curves give (step, value) points and either per-point times (seconds since the trial started,
so start-up cost shows up in the first segment) or a constant ``seconds_per_step``. The value
at a boundary is the last recorded point at or before it (the first point if there is none:
the trial's earliest measurement). A curve that ends before ``max_steps`` ends its trial there
(``on_complete``), as a failed or truncated trial would.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import heapq
import json
import math
import statistics
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rltune.errors import UsageError
from rltune.schedulers import CONTINUE, PAUSE, SCHEDULERS, STOP, Scheduler, make_scheduler
from rltune.schedulers._base import check_goal, score

__all__ = ["Curve", "SimResult", "TrialOutcome", "simulate", "compare", "load_curves",
           "scheduler_factory", "parse_scheduler_spec", "synthetic_curves", "summarize",
           "print_table", "add_arguments", "run"]

SchedulerFactory = Callable[[int, int], Scheduler]  # (num_trials, max_steps) -> fresh scheduler


# ================================================================ curves


@dataclass(frozen=True)
class Curve:
    """One recorded learning curve: steps strictly increasing, optional per-point times."""

    trial: str
    steps: tuple[int, ...]
    values: tuple[float, ...]
    times: tuple[float, ...] | None = None
    seconds_per_step: float = 1.0

    @property
    def end_step(self) -> int:
        return self.steps[-1]

    def value_at(self, step: int) -> float:
        """The last recorded value at or before `step` (the first value if none)."""
        i = bisect.bisect_right(self.steps, step) - 1
        return self.values[max(i, 0)]

    def time_at(self, step: int) -> float:
        """Seconds from the trial's start until it reaches `step`."""
        if self.times is None:
            return step * self.seconds_per_step
        xs, ys = list(self.steps), list(self.times)
        if xs[0] > 0:
            xs.insert(0, 0)
            ys.insert(0, 0.0)
        if step >= xs[-1]:  # past the last point: extrapolate at the mean rate
            rate = ys[-1] / xs[-1] if xs[-1] > 0 else 0.0
            return ys[-1] + (step - xs[-1]) * rate
        return float(np.interp(step, xs, ys))


def make_curve(trial: object, points: Sequence[tuple], *, field: str,
               seconds_per_step: float = 1.0) -> Curve:
    """Validate (step, value[, time]) points into a Curve; bad input raises UsageError(field)."""
    if not points:
        raise UsageError(field, f"trial {trial!r} has no points")
    rows = []
    for p in points:
        if len(p) not in (2, 3):
            raise UsageError(field, f"trial {trial!r}: a point must be [step, value] or "
                             f"[step, value, time], got {p!r}")
        rows.append((_to_step(p[0], field, trial), _to_float(p[1], field, trial),
                     None if len(p) == 2 or p[2] is None else _to_float(p[2], field, trial)))
    rows.sort(key=lambda r: r[0])
    steps = tuple(r[0] for r in rows)
    if len(set(steps)) != len(steps):
        raise UsageError(field, f"trial {trial!r} has the same step twice")
    if steps[-1] < 1:
        raise UsageError(field, f"trial {trial!r} ends at step {steps[-1]}; "
                         "it must reach step >= 1")
    timed = [r[2] is not None for r in rows]
    times = None
    if any(timed):
        if not all(timed):
            raise UsageError(field, f"trial {trial!r}: give a time for every point or for none")
        times = tuple(r[2] for r in rows)
        if any(t < 0 or not math.isfinite(t) for t in times) or any(
                b < a for a, b in zip(times, times[1:])):
            raise UsageError(field, f"trial {trial!r}: times must be finite, >= 0 and "
                             "non-decreasing along the steps")
    if not (seconds_per_step > 0 and math.isfinite(seconds_per_step)):
        raise UsageError(field, f"seconds_per_step must be > 0, got {seconds_per_step!r}")
    return Curve(str(trial), steps, tuple(r[1] for r in rows), times, float(seconds_per_step))


def _to_step(x: object, field: str, trial: object) -> int:
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(field, f"trial {trial!r}: step {x!r} is not a number") from None
    if isinstance(x, bool) or not f.is_integer() or f < 0:
        raise UsageError(field, f"trial {trial!r}: step {x!r} is not a whole number >= 0")
    return int(f)


def _to_float(x: object, field: str, trial: object) -> float:
    if isinstance(x, bool):
        raise UsageError(field, f"trial {trial!r}: {x!r} is not a number")
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(field, f"trial {trial!r}: {x!r} is not a number") from None


def load_curves(path: str | Path, *, seconds_per_step: float = 1.0) -> list[Curve]:
    """Curves from a CSV (trial,step,value[,time]), a JSON file
    ({"curves": [{"trial": .., "points": [[step, value(, time)], ..]}]}) or a study directory
    (trials/<id>/metrics.jsonl with "step" and "reward", optional "time" = seconds since the
    trial started)."""
    path = Path(path)
    if not path.exists():
        raise UsageError("curves", f"{path}: no such file or directory")
    if path.is_dir():
        curves = _load_study_dir(path, seconds_per_step)
    else:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError("curves", f"{path}: cannot read ({e})") from None
        if path.suffix.lower() == ".json" or (path.suffix.lower() != ".csv"
                                              and text.lstrip().startswith("{")):
            curves = _load_json(text, path, seconds_per_step)
        else:
            curves = _load_csv(text, path, seconds_per_step)
    if not curves:
        raise UsageError("curves", f"{path}: no curves found")
    return curves


def _load_csv(text: str, path: Path, seconds_per_step: float) -> list[Curve]:
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in ("trial", "step", "value") if c not in columns]
    if missing:
        raise UsageError("curves", f"{path}: CSV needs a header with columns trial,step,value"
                         f"[,time]; missing {', '.join(missing)}")
    by_trial: dict[str, list[tuple]] = {}
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else v
               for k, v in row.items()}
        if not any(row.values()):
            continue
        if not row.get("trial"):
            raise UsageError("curves.trial", f"{path}:{line}: empty trial id")
        time = row.get("time") or None
        by_trial.setdefault(row["trial"], []).append(
            (row["step"], row["value"]) if time is None else (row["step"], row["value"], time))
    return [make_curve(t, pts, field=f"curves.{t}", seconds_per_step=seconds_per_step)
            for t, pts in by_trial.items()]


def _load_json(text: str, path: Path, seconds_per_step: float) -> list[Curve]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError("curves", f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("curves"), list):
        raise UsageError("curves", f'{path}: expected {{"curves": [{{"trial": .., '
                         '"points": [[step, value], ..]}, ..]}')
    default_sps = doc.get("seconds_per_step", seconds_per_step)
    curves = []
    for i, entry in enumerate(doc["curves"]):
        where = f"curves[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("points"), list):
            raise UsageError(where, 'each curve needs "points": [[step, value], ..]')
        if any(not isinstance(p, list | tuple) for p in entry["points"]):
            raise UsageError(f"{where}.points", "each point must be a list [step, value(, time)]")
        sps = entry.get("seconds_per_step", default_sps)
        if isinstance(sps, bool) or not isinstance(sps, int | float):
            raise UsageError(f"{where}.seconds_per_step", f"must be a number, got {sps!r}")
        curves.append(make_curve(entry.get("trial", i), entry["points"], field=f"{where}.points",
                                 seconds_per_step=sps))
    return curves


def _load_study_dir(path: Path, seconds_per_step: float) -> list[Curve]:
    files = sorted((path / "trials").glob("*/metrics.jsonl"),
                   key=lambda p: (not p.parent.name.isdigit(), _numeric(p.parent.name)))
    if not files:
        raise UsageError("curves", f"{path}: a study directory needs trials/<id>/metrics.jsonl")
    curves = []
    for f in files:
        points = []
        for lineno, line in enumerate(f.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise UsageError("curves", f"{f}:{lineno}: not a JSON line") from None
            if not isinstance(rec, dict) or "step" not in rec or "reward" not in rec:
                continue  # other records (config, events) are not curve points
            # the trial runner writes "wall_time" (seconds since the trial started)
            t = rec.get("time", rec.get("wall_time"))
            pt = (rec["step"], rec["reward"]) + ((t,) if t is not None else ())
            points.append(pt)
        if points:
            curves.append(make_curve(f.parent.name, points, field=f"curves.{f.parent.name}",
                                     seconds_per_step=seconds_per_step))
    return curves


def _numeric(name: str) -> tuple:
    return (int(name), "") if name.isdigit() else (0, name)


def synthetic_curves(num_trials: int = 32, *, max_steps: int = 100_000, points: int = 40,
                     seed: int = 0) -> list[Curve]:
    """A family of CartPole-like learning curves (returns in 0..500), seeded: saturating
    curves with trial-specific ceilings and speeds, some late bloomers that start slow and end
    high, observation noise, and per-trial speed (seconds per step) varying by 4x."""
    rng = np.random.default_rng(seed)
    steps = np.linspace(max_steps / points, max_steps, points).round().astype(int)
    x = steps / max_steps
    curves = []
    for i in range(num_trials):
        ceiling = rng.uniform(0.15, 1.0)
        if rng.random() < 0.25:  # late bloomer: sigmoid with a delay
            delay, sharp = rng.uniform(0.3, 0.6), rng.uniform(8, 16)
            progress = 1 / (1 + np.exp(-sharp * (x - delay)))
            ceiling = max(ceiling, rng.uniform(0.6, 1.0))
        else:
            progress = 1 - np.exp(-x * rng.lognormal(1.2, 0.5))
        noise = rng.normal(0, 0.03, size=points)
        values = np.clip(500 * (ceiling * progress + noise), 0, 500)
        sps = 1e-4 * rng.uniform(0.5, 2.0)
        curves.append(Curve(f"synthetic-{i}", tuple(int(s) for s in steps),
                            tuple(float(v) for v in values), None, float(sps)))
    return curves


# ================================================================ the simulation


@dataclass(frozen=True)
class TrialOutcome:
    trial: str          # the curve's trial label
    state: str          # "completed" | "stopped"
    last_step: int      # where it ended
    last_value: float   # its last reported value
    end_time: float     # simulated time it ended
    compute: float      # slot-seconds it used


@dataclass(frozen=True)
class SimResult:
    wall_time: float        # simulated seconds until the last worker ended
    alpha: float            # compute used / compute of running every worker to the end
    best_score: float       # best last reported value of any worker (nan if none)
    time_to_best: float     # simulated time the best score was reported
    stopped: int            # workers terminated early
    completed: int          # workers that ran to the end of their curve
    best_trial: str         # label of the curve that gave the best score
    compute: float          # slot-seconds used
    full_compute: float     # slot-seconds of running every worker to the end
    utilisation: float      # compute / (wall_time * slots)
    pauses: int             # "pause" answers (context switches on a real cluster)
    trials: tuple[TrialOutcome, ...] = field(default=(), repr=False)


def simulate(curves: Sequence[Curve], scheduler_factory: SchedulerFactory, slots: int, *,
             max_steps: int | None = None, switch_cost: float = 0.0) -> SimResult:
    """Run the workers `curves` (in this order) on `slots` slots under a fresh scheduler
    `scheduler_factory(num_trials, max_steps)`. Pure: same input, same result."""
    n = len(curves)
    if n == 0:
        raise UsageError("curves", "no curves to simulate")
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise UsageError("slots", f"must be an integer >= 1, got {slots!r}")
    if isinstance(switch_cost, bool) or not isinstance(switch_cost, (int, float)) or switch_cost < 0:
        raise UsageError("switch-cost", f"must be a number of seconds >= 0, got {switch_cost!r}")
    if max_steps is None:
        max_steps = max(c.end_step for c in curves)
    sched = scheduler_factory(n, max_steps)
    bounds = sched.boundaries()
    goal = sched.goal

    end = [min(c.end_step, max_steps) for c in curves]
    step = [0] * n
    elapsed = [0.0] * n       # curve time reached by each worker
    used = [0.0] * n          # compute each worker used
    last_value: list[float | None] = [None] * n
    last_time = [0.0] * n     # when each worker last reported
    ended = [math.nan] * n    # when each worker completed or was stopped
    state = ["waiting"] * n
    waiting = deque(range(n))
    paused: set[int] = set()
    events: list[tuple[float, int, int, int]] = []  # (time, seq, worker, target step)
    seq = 0
    free = slots
    now = 0.0
    pauses = 0

    def launch(i: int, resumed: bool = False) -> None:
        nonlocal seq
        k = bisect.bisect_right(bounds, step[i])
        target = bounds[k] if k < len(bounds) and bounds[k] < end[i] else end[i]
        reached = curves[i].time_at(target)
        dt = max(0.0, reached - elapsed[i]) + (switch_cost if resumed else 0.0)
        used[i] += dt
        elapsed[i] = reached
        state[i] = "running"
        heapq.heappush(events, (now + dt, seq, i, target))
        seq += 1

    def fill() -> None:
        nonlocal free
        if paused:
            ready = set(sched.resumable())
            gone = set(sched.stopped())
            for i in sorted(paused):
                if i in gone and i not in ready:
                    paused.discard(i)
                    state[i] = "stopped"
                    ended[i] = now
            for i in sorted(paused & ready):
                if free == 0:
                    break
                paused.discard(i)
                free -= 1
                launch(i, resumed=True)
        while free > 0 and waiting:
            free -= 1
            launch(waiting.popleft())

    fill()
    while events:
        now, _, i, target = heapq.heappop(events)
        step[i] = target
        value = curves[i].value_at(target)
        last_value[i], last_time[i] = value, now
        if target >= end[i]:
            sched.on_complete(i)
            state[i] = "completed"
            ended[i] = now
            free += 1
        else:
            decision = sched.on_report(i, target, value)
            if decision == CONTINUE:
                launch(i)
            elif decision == STOP:
                state[i] = "stopped"
                ended[i] = now
                free += 1
            elif decision == PAUSE:
                state[i] = "paused"
                paused.add(i)
                pauses += 1
                free += 1
            else:
                raise ValueError(f"scheduler answered {decision!r}, not continue/stop/pause")
        fill()
        if not events and paused:
            raise RuntimeError(f"{type(sched).__name__} left workers {sorted(paused)} paused "
                               "with nothing running (barrier never resolved)")

    compute = sum(used)
    full = sum(c.time_at(e) for c, e in zip(curves, end))
    reported = [i for i in range(n) if last_value[i] is not None
                and not math.isnan(last_value[i])]
    if reported:
        best = max(reported, key=lambda i: (score(last_value[i], goal), -last_time[i], -i))
        best_score, time_to_best, best_trial = last_value[best], last_time[best], curves[best].trial
    else:
        best_score, time_to_best, best_trial = math.nan, math.nan, ""
    outcomes = tuple(TrialOutcome(c.trial, state[i], step[i],
                                  math.nan if last_value[i] is None else last_value[i],
                                  ended[i], used[i]) for i, c in enumerate(curves))
    return SimResult(
        wall_time=now, alpha=compute / full if full > 0 else 1.0, best_score=best_score,
        time_to_best=time_to_best, stopped=state.count("stopped"),
        completed=state.count("completed"), best_trial=best_trial, compute=compute,
        full_compute=full, utilisation=compute / (now * slots) if now > 0 else 1.0,
        pauses=pauses, trials=outcomes)


def scheduler_factory(name: str, *, goal: str = "maximize", **params) -> SchedulerFactory:
    """A factory for `simulate`: make_scheduler(name, ...) with the study's size filled in."""
    def factory(num_trials: int, max_steps: int) -> Scheduler:
        return make_scheduler(name, goal=goal, max_steps=max_steps, num_trials=num_trials,
                              **params)
    return factory


def compare(curves: Sequence[Curve], factories: Mapping[str, SchedulerFactory], slots: int, *,
            workers: int | None = None, seeds: int = 1, seed: int = 0,
            max_steps: int | None = None, switch_cost: float = 0.0) -> dict[str, list[SimResult]]:
    """Simulate every scheduler on the same `seeds` random draws: each draw samples `workers`
    curves (all if None) in a random order (numpy Generator seeded seed, seed + 1, ...)."""
    if workers is None:
        workers = len(curves)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= len(curves):
        raise UsageError("workers", f"must be between 1 and the {len(curves)} curves available, "
                         f"got {workers!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UsageError("seeds", f"must be an integer >= 1, got {seeds!r}")
    if max_steps is None:
        max_steps = max(c.end_step for c in curves)
    results: dict[str, list[SimResult]] = {name: [] for name in factories}
    for s in range(seeds):
        rng = np.random.default_rng(seed + s)
        order = [curves[j] for j in rng.permutation(len(curves))[:workers]]
        for name, factory in factories.items():
            results[name].append(simulate(order, factory, slots, max_steps=max_steps,
                                          switch_cost=switch_cost))
    return results


def summarize(results: Sequence[SimResult]) -> dict[str, float]:
    """Means over repeated simulations (NaNs ignored)."""
    keys = ("wall_time", "alpha", "best_score", "time_to_best", "stopped", "utilisation",
            "pauses")
    out = {}
    for k in keys:
        xs = [float(getattr(r, k)) for r in results if not math.isnan(float(getattr(r, k)))]
        out[k] = statistics.fmean(xs) if xs else math.nan
    return out


# ================================================================ command line


def parse_scheduler_spec(spec: str) -> tuple[str, dict[str, object]]:
    """'hypertrick' or 'hypertrick:num_phases=10,r=0.25' -> (name, params)."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in SCHEDULERS:
        raise UsageError("scheduler",
                         f"unknown scheduler {name!r} (known: {', '.join(SCHEDULERS)})")
    if not getattr(SCHEDULERS[name], "replays_curves", True):
        raise UsageError("scheduler", f"{name} changes the learning curves themselves (members copy "
                         "each other), so recorded curves cannot replay it; run a study instead")
    params: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise UsageError("scheduler", f"{spec!r}: parameters are written key=value")
        params[key.strip()] = _parse_scalar(raw.strip())
    return name, params


def _parse_scalar(raw: str) -> object:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("curves", help="learning curves: a CSV (trial,step,value[,time]), a JSON "
                        'file ({"curves": [{"trial": .., "points": [[step, value], ..]}]}) or '
                        "a study directory (trials/<id>/metrics.jsonl)")
    parser.add_argument("--scheduler", action="append", metavar="NAME[:k=v,..]",
                        help="scheduler to compare, repeatable, with optional parameters, e.g. "
                        "hypertrick:num_phases=10,r=0.25 (default: all of "
                        f"{', '.join(SCHEDULERS)})")
    parser.add_argument("--workers", type=int, default=None,
                        help="workers (trials) per simulated study, sampled from the curves "
                        "(default: every curve)")
    parser.add_argument("--slots", type=int, default=None,
                        help="parallel slots W (default: one per worker)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="average over this many random samplings/orderings of the workers")
    parser.add_argument("--seed", type=int, default=0, help="first random seed")
    parser.add_argument("--goal", choices=("maximize", "minimize"), default="maximize",
                        help="whether higher or lower values are better")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="per-trial budget in steps (default: the longest curve)")
    parser.add_argument("--seconds-per-step", type=float, default=1.0,
                        help="time per step for curves without a time column")
    parser.add_argument("--switch-cost", type=float, default=0.0, metavar="SECONDS",
                        help="slot time a paused trial pays when it resumes (checkpoint save and "
                        "load, recompile, warm-up); `benchmarks/ray_overhead.py --switch-cost` "
                        "measures it live")
    parser.add_argument("--output", default=None,
                        help="also write the per-scheduler means as JSON to this file")


def run(args: argparse.Namespace) -> int:
    curves = load_curves(args.curves, seconds_per_step=args.seconds_per_step)
    check_goal(args.goal)
    specs = args.scheduler or [n for n in SCHEDULERS if getattr(SCHEDULERS[n], "replays_curves", True)]
    factories: dict[str, SchedulerFactory] = {}
    for spec in specs:
        name, params = parse_scheduler_spec(spec)
        factories[spec] = scheduler_factory(name, goal=args.goal, **params)
    workers = len(curves) if args.workers is None else args.workers
    slots = workers if args.slots is None else args.slots
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError("max-steps", f"must be >= 1, got {args.max_steps}")
    results = compare(curves, factories, slots, workers=workers, seeds=args.seeds,
                      seed=args.seed, max_steps=args.max_steps, switch_cost=args.switch_cost)
    title = (f"{workers} workers on {slots} slots, {args.curves} "
             f"({len(curves)} curves), mean over {args.seeds} ordering(s)"
             + (f", switch cost {args.switch_cost:g} s" if args.switch_cost else ""))
    print_table({k: summarize(v) for k, v in results.items()}, title=title)
    if args.output:
        Path(args.output).write_text(json.dumps(
            {"title": title, "results": {k: summarize(v) for k, v in results.items()},
             "runs": {k: [_result_dict(r) for r in v] for k, v in results.items()}}, indent=2))
    return 0


def _result_dict(r: SimResult) -> dict:
    d = asdict(r)
    d.pop("trials")
    return d


def print_table(summaries: Mapping[str, Mapping[str, float]], *, title: str = "",
                console=None) -> None:
    """Schedulers side by side (columns), one row per measure."""
    from rich.console import Console
    from rich.table import Table

    rows = [("wall time (s)", "wall_time", "{:.1f}"), ("alpha", "alpha", "{:.1%}"),
            ("best score", "best_score", "{:.4g}"), ("time to best (s)", "time_to_best", "{:.1f}"),
            ("stopped early", "stopped", "{:.1f}"), ("slot utilisation", "utilisation", "{:.0%}"),
            ("pauses", "pauses", "{:.1f}")]
    table = Table(title=title or None)
    table.add_column("")
    for name in summaries:
        table.add_column(name, justify="right")
    for label, key, fmt in rows:
        table.add_row(label, *(("-" if math.isnan(s[key]) else fmt.format(s[key]))
                               for s in summaries.values()))
    if console is None:
        width = max(80, 20 + sum(max(12, len(n) + 3) for n in summaries))
        console = Console(width=width)
    console.print(table)
