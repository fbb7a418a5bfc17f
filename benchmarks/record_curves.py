"""Record a learning-curve set from real rltune PPO CartPole-v1 runs, for `rltune simulate`.

    python benchmarks/record_curves.py [--out tests/data/ppo_cartpole_curves.json]

Runs a study of 24 trials (random learning rates 1e-5..1e-2 log, random seeds), 200k env steps
each, no early stopping, and writes every trial's curve: [step, reward (last-100 mean), seconds
since the trial started] at 20 points. The times are measured on the machine that ran it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rltune.tune.spec import spec_from_dict
from rltune.tune.study import run_study

SPEC = {
    "name": "ppo-cartpole-curves",
    "agent": "ppo",
    "env": "CartPole-v1",
    "budget_steps": 200_000,
    "search_space": {
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "scale": "log"},
        "seed": {"type": "int", "low": 0, "high": 1000},
    },
    "trials": 24,
    "parallel": 2,
    "sampler": {"name": "random", "seed": 7},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" / "data" /
                                             "ppo_cartpole_curves.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_study(spec_from_dict(SPEC), Path(tmp) / "study", eval_episodes=0)
        curves = []
        for record in result.records:
            lines = (Path(tmp) / "study" / "trials" / str(record.number) / "metrics.jsonl").read_text().splitlines()
            points = []
            for line in lines:
                row = json.loads(line)
                if row["reward"] is not None:
                    points.append([row["step"], round(row["reward"], 3), round(row["wall_time"], 3)])
            curves.append({"trial": record.number, "params": record.params, "points": points})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"source": "rltune PPO CartPole-v1, benchmarks/record_curves.py",
                                          "metric": "reward", "goal": "maximize", "curves": curves}, indent=1))
    print(f"wrote {len(curves)} curves to {args.out}")


if __name__ == "__main__":
    main()
