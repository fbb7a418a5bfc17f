"""A strict trainer for testing command-line styles (no rltune, no JAX: starts in a blink).

Its argparse rejects unknown flags (no --job-dir), spells flags in kebab-case and takes them as
``--name value`` or ``--name=value``; it writes TensorBoard events under ``runs/<run-name>/``
relative to its working directory, like many PyTorch scripts. Metric at report k = 1..steps:

    score(k) = -(log10(learning_rate) + 3) ** 2 + bonus(k),  bonus = [0, 0.5, 0.2, 0.1, ...][k % 4]

so the per-report value is noisy; `expected_scores` gives the sequence. It writes its pid to
trainer.pid in its working directory, and with --spawn-child starts a child process (same
process group) whose pid goes to child.pid: a process that must die with the trainer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

BONUS = (0.0, 0.5, 0.2, 0.1)


def expected_scores(learning_rate: float, steps: int) -> list[float]:
    base = -((math.log10(learning_rate) + 3.0) ** 2)
    return [base + BONUS[k % 4] for k in range(1, steps + 1)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--learning-rate", type=float, required=True)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--run-name", default="run")
    p.add_argument("--tag", default="episode/score")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--spawn-child", type=lambda s: s == "true", default=False)
    p.add_argument("--out-json", default=None, help="also write the parsed arguments here")
    args = p.parse_args(argv)  # unknown flags: exit status 2

    Path("trainer.pid").write_text(str(os.getpid()))
    if args.out_json:
        Path(args.out_json).write_text(json.dumps({**vars(args), "cwd": os.getcwd()}))
    if args.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path("child.pid").write_text(str(child.pid))

    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(Path("runs") / args.run_name))
    for k, score in enumerate(expected_scores(args.learning_rate, args.steps), start=1):
        writer.add_scalar(args.tag, score, k * 100)
        writer.flush()
        print(f"step {k * 100}: {args.tag} = {score}", flush=True)
        time.sleep(args.sleep)
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
