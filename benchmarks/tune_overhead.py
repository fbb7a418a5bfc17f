"""Per-trial overhead of the tuning engine with a trivial trainer.

    python benchmarks/tune_overhead.py [--trials 100] [--parallel 1 2]

The trainer is a shell one-liner that appends one hypertune JSON line and exits, so a trial's
cost is the engine's: Optuna ask/tell on SQLite, the worker round trip, starting the trainer
process, reading its metric, and rewriting trials.csv. The trainer's own cost (measured by
running it directly the same number of times) is printed beside the engine's overhead.
For reference, DESIGN.md measured Ray Tune at ~1.3 s per trial on this kind of machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from rltune.tune.spec import spec_from_dict
from rltune.tune.study import run_study

TRAINER = ["sh", "-c", 'echo "{\\"reward\\": 1.0, \\"global_step\\": 1}" >> "$CLOUD_ML_HP_METRIC_FILE"']


def trainer_cost(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CLOUD_ML_HP_METRIC_FILE": str(Path(tmp) / "m")}
        start = time.perf_counter()
        for _ in range(n):
            subprocess.run(TRAINER, env=env, check=True)
        return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    direct = trainer_cost(args.trials)
    print(f"trivial trainer run directly: {direct * 1000:.1f} ms per run")
    for parallel in args.parallel:
        spec = spec_from_dict({"name": "overhead", "command": TRAINER, "metric": "reward",
                               "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                               "trials": args.trials, "parallel": parallel,
                               "sampler": {"name": "random", "seed": 0}})
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = run_study(spec, Path(tmp) / "study")
            wall = time.perf_counter() - start
        ok = sum(r.state == "COMPLETE" for r in result.records)
        per_trial = wall / args.trials
        print(f"parallel {parallel}: {args.trials} trials ({ok} complete) in {wall:.2f} s = "
              f"{per_trial * 1000:.0f} ms per trial wall; engine overhead per trial "
              f"{(per_trial * parallel - direct) * 1000:.0f} ms of slot time "
              f"(wall x parallel - trainer), {per_trial * 1000:.0f} ms of wall time; "
              f"includes starting {parallel} worker process(es) once")


if __name__ == "__main__":
    main()
