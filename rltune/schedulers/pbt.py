"""Population-based training (Jaderberg et al. 2017): exploit better members, explore around them.

Every ``interval`` steps the members, all at the same step, are ranked by their metric. Each
member in the bottom ``quantile`` copies a member drawn at random from the top ``quantile``
(*exploit*: its weights, optimizer state and traced hyperparameters) and then changes the
copied hyperparameters named in ``mutations`` (*explore*): each one, independently, is
resampled from its range with probability ``resample_probability``, else multiplied by one of
the ``perturb`` factors drawn at random; the result is always clipped to the range. A member
whose training diverged (NaN) is always exploited, whatever its rank.

The scheduler never stops a member: `on_report` answers "continue" at every interval; the copy
itself is made by the executor that holds the members (the population executor, in place in
the vmapped state), which calls `exploit_explore` with the members' values and hyperparameters.

Choices made here:
- *Quantile size.* ``ceil(quantile * n)`` members, at most ``n // 2`` (so the bottom and top
  never overlap); fewer than two members: nothing happens.
- *Ties.* Members are ranked by score, ties broken by member id (lower id ranks higher), so
  the decision is a pure function of the values and the seed.
- *Scales.* ``log`` and ``linear`` ranges are perturbed by multiplying the value;
  ``reverse_log`` (gamma-like, dense near ``high``) by multiplying the distance to ``high``;
  resampling follows the scale. An ``int`` range is rounded after perturbing. A
  ``categorical``/``discrete`` parameter moves to a neighbouring value instead of being
  perturbed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rltune.errors import UsageError
from rltune.schedulers._base import CONTINUE, Decision, Scheduler, check_float, check_int, score

KINDS = ("float", "int", "discrete", "categorical")
EXPLORES = ("perturb", "pb2")  # random perturbation (PBT), or the GP bandit (PB2, schedulers/pb2.py)
SCALES = ("linear", "log", "reverse_log")


# ---------------------------------------------------------------- mutation ranges
@dataclass(frozen=True)
class Mutation:
    """How one hyperparameter may change: a range (float/int) or a list of values."""

    name: str
    kind: str = "float"
    low: float | None = None
    high: float | None = None
    scale: str = "linear"
    values: tuple[Any, ...] = ()

    def clip(self, value: float) -> Any:
        if self.kind in ("float", "int"):
            value = min(max(value, self.low), self.high)
            return int(round(value)) if self.kind == "int" else float(value)
        return value


def parse_mutations(data: Any) -> dict[str, Mutation]:
    """``{name: {type: float, low: .., high: .., scale: log}}`` (or ``{values: [..]}``) as
    Mutations; errors name ``scheduler.mutations.<name>.<field>``."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise UsageError("scheduler.mutations", "must map hyperparameter names to ranges, e.g. "
                         "{learning_rate: {type: float, low: 1e-4, high: 1e-2, scale: log}}")
    return {str(name): parse_mutation(str(name), spec) for name, spec in data.items()}


def parse_mutation(name: str, spec: Any) -> Mutation:
    field = f"scheduler.mutations.{name}"
    if not isinstance(spec, Mapping):
        raise UsageError(field, "must be a mapping such as {type: float, low: 1e-4, high: 1e-2, scale: log}")
    unknown = set(spec) - {"type", "low", "high", "scale", "values"}
    if unknown:
        raise UsageError(f"{field}.{sorted(unknown)[0]}", "unknown key; allowed: type, low, high, scale, values")
    kind = spec.get("type", "categorical" if "values" in spec else "float")
    if kind not in KINDS:
        raise UsageError(f"{field}.type", f"must be one of {', '.join(KINDS)}; got {kind!r}")
    scale = spec.get("scale", "linear")
    if scale not in SCALES:
        raise UsageError(f"{field}.scale", f"must be one of {', '.join(SCALES)}; got {scale!r}")
    if kind in ("discrete", "categorical"):
        values = spec.get("values")
        if not isinstance(values, (list, tuple)) or not values:
            raise UsageError(f"{field}.values", "needs a non-empty list of values")
        return Mutation(name, kind, values=tuple(values))
    if "low" not in spec or "high" not in spec:
        raise UsageError(f"{field}.{'low' if 'low' not in spec else 'high'}", f"a {kind} range needs low and high")
    low = check_float(f"{field}.low", spec["low"])
    high = check_float(f"{field}.high", spec["high"])
    if low > high:
        raise UsageError(f"{field}.high", f"must be >= low ({low}); got {high}")
    if scale == "log" and low <= 0:
        raise UsageError(f"{field}.low", f"a log scale needs low > 0; got {low}")
    if kind == "int":
        low, high = check_int(f"{field}.low", low), check_int(f"{field}.high", high)
    return Mutation(name, kind, low, high, scale)


# ---------------------------------------------------------------- pure decision functions
def quantile_size(n: int, quantile: float) -> int:
    """Members in the bottom (and in the top) quantile: ceil(q n), at most n // 2."""
    return min(math.ceil(quantile * n - 1e-9), n // 2)


def rank_members(values: Mapping[int, float], goal: str = "maximize") -> list[int]:
    """Member ids from best to worst (NaN is the worst; ties: lower id first)."""
    return sorted(values, key=lambda m: (-score(values[m], goal), m))


def split_quantiles(values: Mapping[int, float], quantile: float, goal: str = "maximize",
                    failed: Sequence[int] = (), only_failed: bool = False) -> tuple[list[int], list[int]]:
    """(bottom, top): the members to replace and those they may copy. Failed members take the
    first places in the bottom and are never in the top; `only_failed` (a failure between
    intervals) replaces the failed members alone."""
    failed_set = set(failed)
    healthy = {m: v for m, v in values.items() if m not in failed_set}
    ranked = rank_members(healthy, goal)
    k = quantile_size(len(values), quantile)
    top = ranked[:max(k, 1 if failed_set else 0)]
    worst = 0 if only_failed else max(0, k - len(failed_set))
    bottom = [m for m in ranked[len(ranked) - worst:] if m not in top] if worst else []
    return sorted(set(bottom) | failed_set), top


def choose_sources(bottom: Sequence[int], top: Sequence[int], rng: random.Random) -> dict[int, int]:
    """Each bottom member copies a top member drawn uniformly (with replacement)."""
    if not top:
        return {}
    return {m: rng.choice(list(top)) for m in bottom}


def explore_value(mutation: Mutation, value: Any, rng: random.Random, resample_probability: float,
                  perturb: Sequence[float]) -> Any:
    """A new value near `value` (or resampled), always inside the mutation's range."""
    if mutation.kind in ("discrete", "categorical"):
        values = list(mutation.values)
        if rng.random() < resample_probability or value not in values:
            return rng.choice(values)
        index = values.index(value) + rng.choice((-1, 1))
        return values[min(max(index, 0), len(values) - 1)]
    if rng.random() < resample_probability:
        return mutation.clip(resample(mutation, rng))
    factor = rng.choice(list(perturb))
    if mutation.scale == "reverse_log":
        return mutation.clip(mutation.high - (mutation.high - value) * factor)
    return mutation.clip(value * factor)


def resample(mutation: Mutation, rng: random.Random) -> float:
    low, high = mutation.low, mutation.high
    if mutation.scale == "log":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if mutation.scale == "reverse_log" and low > 0:  # mirrored, as the search space samples it
        return high + low - math.exp(rng.uniform(math.log(low), math.log(high)))
    return rng.uniform(low, high)


def explore(mutations: Mapping[str, Mutation], hps: Mapping[str, Any], rng: random.Random,
            resample_probability: float, perturb: Sequence[float]) -> dict[str, Any]:
    """Copied hyperparameters with every mutated one explored (names in a fixed order)."""
    out = dict(hps)
    for name in sorted(mutations):
        out[name] = explore_value(mutations[name], hps[name], rng, resample_probability, perturb)
    return out


@dataclass(frozen=True)
class Exploit:
    """Member `member` copies member `source` and continues with hyperparameters `hps`."""

    member: int
    source: int
    hps: dict[str, Any]
    reason: str = "exploit"  # or "diverged"


# ---------------------------------------------------------------- the scheduler object
class PBTScheduler(Scheduler):
    """Boundaries every `interval` steps; never stops a member; `exploit_explore` decides."""

    name = "pbt"
    replays_curves = False  # it changes the curves themselves: `simulate` cannot replay it

    def __init__(self, *, goal: str = "maximize", max_steps: int, interval: int | None = None,
                 quantile: float = 0.25, resample_probability: float = 0.25,
                 perturb: Sequence[float] = (0.8, 1.2), mutations: Mapping[str, Any] | None = None,
                 seed: int = 0, explore: str = "perturb"):
        super().__init__(goal=goal, max_steps=max_steps)
        if interval is None:
            interval = max(1, self.max_steps // 10)
        self.interval = check_int("scheduler.interval", interval, low=1)
        self.quantile = check_float("scheduler.quantile", quantile, low=0.0, high=0.5, open_interval=False)
        if self.quantile <= 0:
            raise UsageError("scheduler.quantile", f"must be in (0, 0.5]; got {quantile}")
        self.resample_probability = check_float("scheduler.resample_probability", resample_probability,
                                                low=0.0, high=1.0)
        if isinstance(perturb, (str, bytes)) or not isinstance(perturb, Sequence) or not perturb:
            raise UsageError("scheduler.perturb", f"must be a list of factors such as [0.8, 1.2]; got {perturb!r}")
        self.perturb = tuple(check_float("scheduler.perturb", f, low=0.0, open_interval=True) for f in perturb)
        self.mutations = {k: (v if isinstance(v, Mutation) else parse_mutation(k, v))
                          for k, v in (mutations or {}).items()}
        self.seed = check_int("scheduler.seed", seed, low=0)
        self.rng = random.Random(self.seed)
        if explore not in EXPLORES:
            raise UsageError("scheduler.explore", f"must be one of {', '.join(EXPLORES)}; got {explore!r}")
        self.explore = explore
        # PB2 (schedulers/pb2.py): a GP bandit picks the explored values; it learns across rounds
        self.pb2 = None
        if explore == "pb2":
            from rltune.schedulers.pb2 import PB2History

            self.pb2 = PB2History(self.mutations)
        self._bounds = list(range(self.interval, self.max_steps, self.interval))

    def _decide(self, trial_id: int, index: int, value: float) -> Decision:
        return CONTINUE

    def exploit_explore(self, values: Mapping[int, float], hps: Mapping[int, Mapping[str, Any]],
                        failed: Sequence[int] = (), only_failed: bool = False) -> list[Exploit]:
        """One PBT round over members at the same step: who copies whom, with which new
        hyperparameters. `hps[m]` holds member m's traced hyperparameters (at least the
        mutated ones); `failed` members diverged and must be replaced; `only_failed`: a round
        between intervals, for them alone. Uses (and advances) the seeded random stream."""
        if len(values) < 2:
            return []
        bottom, top = split_quantiles(values, self.quantile, self.goal, failed, only_failed)
        sources = choose_sources(bottom, top, self.rng)
        failed_set = set(failed)

        def perturbed(copied):
            return explore(self.mutations, copied, self.rng, self.resample_probability, self.perturb)

        if self.pb2 is not None and not only_failed:
            self.pb2.observe(values, hps)
        choices, pending = [], []
        for m, src in sorted(sources.items()):
            if self.pb2 is not None:
                new = self.pb2.explore(hps[src], self.rng, pending, perturbed)
                self.pb2.copied(m, src, new)
            else:
                new = perturbed(hps[src])
            choices.append(Exploit(m, src, new, "diverged" if m in failed_set else "exploit"))
        return choices

    def __repr__(self) -> str:
        return (f"PBTScheduler(goal={self.goal!r}, max_steps={self.max_steps}, interval={self.interval}, "
                f"quantile={self.quantile}, mutations={sorted(self.mutations)})")
