"""PB2's explore step (Parker-Holder et al. 2020, "Provably Efficient Online Hyperparameter
Optimization with Population-Based Bandits"): instead of perturbing the copied values at random,
pick them with a Gaussian-process bandit fitted to how much each member's metric *changed* over
an interval as a function of the round and the hyperparameters it trained with.

`scheduler: {name: pbt, explore: pb2}` selects it; exploit (who copies whom) is PBT's.

Choices made here (pure numpy, no GP library):
- *Data.* One point per member and round: (round, its hyperparameters during the interval) ->
  metric now minus metric at the start of the interval (a member that copied starts from its
  source's metric). The last ``HISTORY`` rounds are kept.
- *Kernel.* The paper's time-varying kernel: a squared exponential on the hyperparameters,
  normalised to [0, 1] (log ranges on a log axis), times ``(1 - EPSILON) ** (|t - t'| / 2)``,
  so old rounds count less. The length scale is the one of ``LENGTH_SCALES`` with the highest
  marginal likelihood; targets are standardised; fixed noise ``NOISE``.
- *Acquisition.* UCB, mean + ``KAPPA`` x std, maximised over ``CANDIDATES`` random points of the
  box drawn from the scheduler's seeded stream. Members replaced in the same round are chosen
  one after the other, each earlier choice added as a pending point (its variance shrinks,
  "kriging believer"), so they spread out instead of all taking the same point.
- Discrete/categorical mutations are explored as PBT does; with fewer than ``MIN_POINTS`` points
  every mutation is.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

EPSILON = 0.1
LENGTH_SCALES = (0.1, 0.2, 0.5, 1.0)
NOISE = 0.1
KAPPA = 2.0
CANDIDATES = 512
HISTORY = 10
MIN_POINTS = 4


def to_unit(mutation, value: float) -> float:
    """A float/int hyperparameter as a coordinate in [0, 1] (log ranges on a log axis)."""
    low, high = mutation.low, mutation.high
    if high == low:
        return 0.5
    if mutation.scale == "log":
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def from_unit(mutation, u: float) -> Any:
    low, high = mutation.low, mutation.high
    u = min(max(u, 0.0), 1.0)
    value = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if mutation.scale == "log" \
        else low + u * (high - low)
    return mutation.clip(value)


def kernel(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    """Time-varying squared exponential: column 0 is the round, the rest the unit box."""
    d2 = ((a[:, None, 1:] - b[None, :, 1:]) ** 2).sum(-1)
    dt = np.abs(a[:, None, 0] - b[None, :, 0])
    return np.exp(-d2 / (2 * length ** 2)) * (1 - EPSILON) ** (dt / 2)


def fit(x: np.ndarray, y: np.ndarray) -> dict:
    """The GP posterior's pieces for standardised `y`, the length scale by marginal likelihood."""
    mean, std = float(y.mean()), float(y.std()) or 1.0
    z = (y - mean) / std
    best = None
    for length in LENGTH_SCALES:
        k = kernel(x, x, length) + NOISE * np.eye(len(x))
        chol = np.linalg.cholesky(k)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
        loglik = -0.5 * z @ alpha - np.log(np.diag(chol)).sum()
        if best is None or loglik > best["loglik"]:
            best = {"loglik": loglik, "length": length, "chol": chol, "alpha": alpha}
    return {**best, "x": x, "mean": mean, "std": std}


def predict(gp: dict, points: np.ndarray, pending: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and std (standardised units) at `points`; `pending` points count as
    observed at their own posterior mean (they lower the variance around them only)."""
    x, length = gp["x"], gp["length"]
    ks = kernel(points, x, length)
    mu = ks @ gp["alpha"]
    if pending is not None and len(pending):
        x = np.concatenate([x, pending])
        chol = np.linalg.cholesky(kernel(x, x, length) + NOISE * np.eye(len(x)))
        ks = kernel(points, x, length)
    else:
        chol = gp["chol"]
    v = np.linalg.solve(chol, ks.T)
    var = np.maximum(1.0 - (v ** 2).sum(0), 1e-12)
    return mu, np.sqrt(var)


def select(gp: dict, t: float, dims: int, rng: random.Random, pending: Sequence[np.ndarray]) -> np.ndarray:
    """The unit-box point with the highest UCB at round `t`."""
    cand = np.array([[t] + [rng.random() for _ in range(dims)] for _ in range(CANDIDATES)])
    mu, sd = predict(gp, cand, np.array(pending) if pending else None)
    return cand[int(np.argmax(mu + KAPPA * sd)), 1:]


class PB2History:
    """The data PB2 learns from, kept by the scheduler across rounds."""

    def __init__(self, mutations: Mapping[str, Any]):
        self.names = sorted(n for n, m in mutations.items() if m.kind in ("float", "int"))
        self.mutations = mutations
        self.rounds = 0
        self.points: list[tuple[list[float], float]] = []  # ([round, unit hps...], metric change)
        self.start: dict[int, tuple[float, dict[str, Any]]] = {}  # member -> (metric, hps) at interval start

    def observe(self, values: Mapping[int, float], hps: Mapping[int, Mapping[str, Any]]) -> None:
        """A full round: each member's change since the start of its interval."""
        self.rounds += 1
        for m, value in values.items():
            if m in self.start and math.isfinite(value) and math.isfinite(self.start[m][0]):
                before, used = self.start[m]
                self.points.append(([self.rounds] + [to_unit(self.mutations[n], used[n]) for n in self.names],
                                    value - before))
        self.points = [p for p in self.points if p[0][0] > self.rounds - HISTORY]
        self.start = {m: (values[m], dict(hps[m])) for m in values}

    def copied(self, member: int, source: int, hps: Mapping[str, Any]) -> None:
        """The member starts its next interval from the source's state, with `hps`."""
        self.start[member] = (self.start[source][0] if source in self.start else math.nan, dict(hps))

    def explore(self, hps: Mapping[str, Any], rng: random.Random, pending: list[np.ndarray],
                fallback) -> dict[str, Any]:
        """The copied hyperparameters with every float/int mutation chosen by the bandit
        (`fallback(hps)` explores the rest, and everything while data is scarce)."""
        out = fallback(hps)
        if not self.names or len(self.points) < MIN_POINTS:
            return out
        x = np.array([p[0] for p in self.points], float)
        y = np.array([p[1] for p in self.points], float)
        gp = fit(x, y)
        unit = select(gp, self.rounds + 1, len(self.names), rng, pending)
        pending.append(np.concatenate([[self.rounds + 1], unit]))
        for name, u in zip(self.names, unit):
            out[name] = from_unit(self.mutations[name], float(u))
        return out
