"""A tiny trainer for testing external-command trials (no JAX: it starts in a fraction of a second).

The metric at step s (s = 1..steps, reported with global_step = 10 * s) is

    metric(s) = -(log10(learning_rate) + 3) ** 2 - (1 - s / steps)

so it rises over steps to -(log10(lr) + 3) ** 2, best at lr = 1e-3. See `expected_history`.
The environment it was started with is written to <job-dir>/env.json, its pid to
<job-dir>/trainer.pid.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for rltune


def metric(learning_rate: float, step: int, steps: int) -> float:
    return -((math.log10(learning_rate) + 3.0) ** 2) - (1.0 - step / steps)


def expected_history(learning_rate: float, steps: int) -> list[tuple[int, float]]:
    return [(10 * s, metric(learning_rate, s, steps)) for s in range(1, steps + 1)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--job-dir", required=True)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--tag", default="reward")
    p.add_argument("--channel", choices=["tb", "hypertune", "both"], default="hypertune")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep after each step")
    p.add_argument("--fail-at", type=int, default=None, help="exit with --exit-code at this step")
    p.add_argument("--exit-code", type=int, default=3)
    p.add_argument("--nan-at", type=int, default=None, help="report NaN from this step on")
    p.add_argument("--verbose", type=lambda s: s == "true", default=False)
    args = p.parse_args(argv)

    job_dir = Path(args.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "env.json").write_text(json.dumps(dict(os.environ)))
    (job_dir / "trainer.pid").write_text(str(os.getpid()))

    writer = reporter = None
    if args.channel in ("tb", "both"):
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(job_dir))
    if args.channel in ("hypertune", "both"):
        from rltune import hypertune

        reporter = hypertune.HyperTune()

    for s in range(1, args.steps + 1):
        if args.fail_at is not None and s >= args.fail_at:
            print(f"failing at step {s}", flush=True)
            return args.exit_code
        value = metric(args.learning_rate, s, args.steps)
        if args.nan_at is not None and s >= args.nan_at:
            value = float("nan")
        if args.verbose:
            print(f"step {10 * s}: {value}", flush=True)
        if writer is not None:
            writer.add_scalar(args.tag, value, 10 * s)
            writer.flush()
        if reporter is not None:
            reporter.report_hyperparameter_tuning_metric(args.tag, value, 10 * s)
        if args.sleep:
            time.sleep(args.sleep)
    if writer is not None:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
