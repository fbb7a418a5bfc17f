"""Population-based training through checkpoints: the local and Ray executors.

There, each member is an ordinary trial in a worker of its own (a process, a Ray actor), and
there may be fewer slots than members (`parallel` < trials). The driver runs PBT in
*generations*, synchronously (Ray Tune's default PBT decides asynchronously, on stale scores of
the others; a barrier keeps the decision the same pure function of the members' values as on
the population executor, and the same seeded stream gives the same copies):

1. every member trains to the next PBT interval boundary, reports there and is *paused* (the
   schedulers' pause: it stops keeping its last checkpoint and frees its slot);
2. when every member is at the barrier (none runs, none decided in the last round is still to
   resume), the driver calls `PBTScheduler.exploit_explore` with the values they reported; each chosen member's checkpoint (`checkpoints/last.msgpack`:
   weights, optimizer moments, environments, episode statistics, counters) is replaced by a
   copy of its source's, whose random key is folded with the member's trial number (as the
   population executor does, so `hp_schedule` replays it), and its traced hyperparameters
   become the explored ones;
3. every member resumes from its checkpoint (on Ray possibly on another node: the driver's
   study directory holds every trial's files and ships them to the actor that resumes it).

A member whose loss turns NaN ends its segment as a failed run; here it waits at the barrier
like the others and is replaced there by a copy of a top member (at the end of the interval in
which it diverged). One that diverges after the last boundary fails: no copy is made after it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from rltune.tune.executors.base import Exploited

DIVERGED = "diverged"  # the reason prefix of a trial whose loss turned NaN (tune/trial.py)


def as_float32(x: Any) -> float:
    """A hyperparameter as the float32 the compiled program uses, written as the shortest decimal
    that reads back as that float32 (what the schedule records and a replay passes in)."""
    import numpy as np

    return float(f"{float(np.float32(x)):.9g}")


def copy_checkpoint(source_dir: Path, target_dir: Path, fold: int, config: dict) -> None:
    """Exploit through files: the target's last checkpoint becomes the source's state, random
    key folded with `fold`, saved with the target's new `config`. The target keeps its own
    checkpoint extras (best reward so far, wall time) and every other file (its best
    checkpoint, metrics, logs): only the state it resumes from changes."""
    import jax  # here, not at the module's top: the driver imports this module for any study
    import numpy as np

    from rltune import checkpoint

    name = checkpoint.FILE_NAME["last"]
    payload = checkpoint.read(Path(source_dir) / "checkpoints" / name)
    state = dict(payload["state"])
    if "rng" in state:
        state["rng"] = np.asarray(jax.random.fold_in(np.asarray(state["rng"]), fold))
    target = Path(target_dir) / "checkpoints" / name
    own = checkpoint.read(target)["extra"] if target.exists() else {}
    extra = {**payload["extra"], **{k: v for k, v in own.items() if k != "env_steps"}}
    checkpoint.write(target, {**payload, "config": config, "state": state, "extra": extra})


@dataclasses.dataclass
class Waiting:
    """A member at the barrier: the value it reported there (NaN: it diverged) and its step."""

    value: float
    step: int
    diverged: bool = False


class CheckpointPBT:
    """The driver's PBT rounds over paused members (see the module docstring)."""

    def __init__(self, settings: dict, names: list[str], trial_dir):
        from rltune.schedulers import make_scheduler

        # the population executor's settings (resolved mutations, seed): the same decisions
        self.scheduler = make_scheduler("pbt", goal=settings["goal"], max_steps=settings["max_steps"],
                                        **settings["params"])
        self.names = list(names)
        self.trial_dir = trial_dir  # number -> Path
        self.hps: dict[int, dict[str, float]] = {}  # each member's traced values now
        self.waiting: dict[int, Waiting] = {}
        self.ready: list[int] = []  # decided: resume these, in order

    def start(self, number: int, config) -> None:
        self.hps[number] = {n: as_float32(getattr(config, n)) for n in self.names}

    def arrive(self, number: int, value: float, step: int, diverged: bool = False) -> None:
        self.waiting[number] = Waiting(math.nan if diverged else value, step, diverged)

    def leave(self, number: int) -> None:
        """A member that ended (failed after its report, interrupted) no longer holds the barrier."""
        self.waiting.pop(number, None)
        if number in self.ready:
            self.ready.remove(number)

    def at_barrier(self) -> bool:
        """Every member left is at the barrier: some wait there and none decided in the last
        round is still to resume. A round over fewer members ranks them apart from the rest
        (with 2 slots, two members pausing in the same poll while the other two had not yet
        resumed made two rounds, and two copies, at one boundary)."""
        return bool(self.waiting) and not self.ready

    def round(self, config_of) -> tuple[list[Exploited], list[int]]:
        """Decide and copy for every waiting member; returns the copies (as `Exploited` events,
        for the lineage) and the diverged members no one could replace (they fail). The
        others are ready to resume. `config_of(n, hps)`: member n's full config dict with
        traced values `hps`, saved in its new checkpoint."""
        waiting, self.waiting = self.waiting, {}
        values = {n: w.value for n, w in waiting.items()}
        failed = [n for n, w in waiting.items() if w.diverged]
        choices = self.scheduler.exploit_explore(values, {n: self.hps[n] for n in waiting}, failed=failed)
        events = []
        for c in choices:
            hps = {k: as_float32(v) for k, v in c.hps.items()}
            copy_checkpoint(self.trial_dir(c.source), self.trial_dir(c.member), c.member,
                            config_of(c.member, hps))
            self.hps[c.member] = hps
            events.append(Exploited(c.member, waiting[c.source].step, c.source, hps, c.reason))
        replaced = {c.member for c in choices}
        lost = sorted(n for n in failed if n not in replaced)
        self.ready += sorted(n for n in waiting if n not in lost)
        return events, lost

    def config(self, number: int) -> dict[str, float]:
        """Member `number`'s traced values now (to lay over its sampled params)."""
        return dict(self.hps.get(number, {}))

