"""Fault injection: kill the driver, a worker and a trainer at random points of a 20-trial
study, resume after each kill, and check that nothing is lost and nothing is left behind.

    python benchmarks/faults.py [--trials 20] [--rounds 6] [--seed 0]

Each round starts (or resumes) the study, waits a random time, then kills one of: the driver
(SIGKILL, SIGTERM or SIGINT), a worker process (SIGKILL) or a running trainer (SIGKILL). At the
end the study is resumed until it finishes, and the script checks:
- exactly `trials` trials ended: COMPLETE, or FAILED with their reason when their worker or
  trainer was killed; trials the driver's death interrupted are re-run, never counted twice;
- no configuration ran to its end twice;
- no process of the study is alive (every pid it ever recorded: workers and trainers);
- trials.csv and the Optuna storage agree on every trial's state and value.
It prints the counts and exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TRAINER = Path(__file__).resolve().parent.parent / "tests" / "trainers" / "tiny_trainer.py"
SPEC = """
    name: faults
    command: [{python}, {trainer}, --steps, "6", --sleep, "0.15"]
    metric: reward
    trainer: {{job_dir: true}}
    search_space:
      learning_rate: {{type: float, low: 1.0e-5, high: 1.0e-1, scale: log}}
    trials: {trials}
    parallel: 2
    max_failed_trials: 1000
    sampler: {{name: tpe, seed: 0}}
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def recorded_pids(out: Path) -> set[int]:
    pids = set()
    for path in list(out.glob("trials/*/pid")) + list(out.glob("trials/*/job/trainer.pid")):
        text = path.read_text().strip()
        if text.isdigit():
            pids.add(int(text))
    return pids


def rows(out: Path) -> list[dict]:
    try:
        with (out / "trials.csv").open() as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []


def run(trials: int, rounds: int, seed: int) -> int:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = tmp / "spec.yaml"
        spec.write_text(textwrap.dedent(SPEC.format(python=sys.executable, trainer=TRAINER, trials=trials)))
        out = tmp / "study"
        ever: set[int] = set()
        kills = {"driver SIGKILL": 0, "driver SIGTERM": 0, "driver SIGINT": 0, "worker": 0, "trainer": 0}
        for i in range(rounds + 50):
            cmd = [sys.executable, "-m", "rltune", "tune", str(spec), "--out", str(out)]
            if (out / "study.db").exists():
                cmd.append("--resume")
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            if i >= rounds:  # no more faults: let it finish
                _, err = proc.communicate(timeout=600)
                ever |= recorded_pids(out)
                if proc.returncode == 0:
                    break
                print(f"final run exited {proc.returncode}: {err.strip()[-300:]}")
                continue
            end = time.time() + 120  # let the driver start (imports, its first trials), then a random delay
            while time.time() < end and proc.poll() is None and not list(out.glob("trials/*/pid")):
                time.sleep(0.2)
            time.sleep(rng.uniform(0.5, 5.0))
            ever |= recorded_pids(out)
            what = rng.choice(list(kills))
            if proc.poll() is not None:
                continue
            if what.startswith("driver"):
                sig = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}[what.split()[1]]
                proc.send_signal(sig)
            else:
                name = "pid" if what == "worker" else "job/trainer.pid"
                running = [p for p in out.glob(f"trials/*/{name}")
                           if p.read_text().strip().isdigit() and alive(int(p.read_text()))]
                if not running:
                    proc.send_signal(signal.SIGINT)
                    what = "driver SIGINT"
                else:
                    os.kill(int(rng.choice(running).read_text()), signal.SIGKILL)
            kills[what] += 1
            if what.startswith("driver"):
                proc.wait(timeout=120)
            else:  # the study goes on; stop it after a while like a user would
                time.sleep(rng.uniform(1.0, 3.0))
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=120)
            ever |= recorded_pids(out)
        time.sleep(2)
        return check(out, trials, kills, ever)


def check(out: Path, trials: int, kills: dict, ever: set[int]) -> int:
    import optuna

    table = rows(out)
    stored = {t.number: t for t in optuna.load_study(study_name="faults",
                                                     storage=f"sqlite:///{out / 'study.db'}").get_trials()}
    complete = [r for r in table if r["state"] == "COMPLETE"]
    # a trial whose worker or trainer was killed is FAILED with its reason and counts as run
    # (as the cloud service counts failed trials); one the driver's death interrupted is re-run
    ended = [r for r in table if r["state"] == "COMPLETE" or (r["state"] == "FAIL" and r["reason"] != "interrupted")]
    configs = [r["learning_rate"] for r in ended]
    left = sorted(p for p in ever if alive(p))
    agree = all(r["state"] == stored[int(r["number"])].state.name
                and (r["reward"] == "" or stored[int(r["number"])].value is None
                     or abs(float(r["reward"]) - stored[int(r["number"])].value) < 1e-9)
                for r in table if r["state"] in ("COMPLETE", "FAIL"))
    print("kills: " + ", ".join(f"{k} {v}" for k, v in kills.items()))
    print(f"trials recorded {len(table)}: ended {len(ended)} (expected {trials}: {len(complete)} complete, "
          f"{len(ended) - len(complete)} failed by a kill), interrupted and re-run "
          f"{sum(r['reason'] == 'interrupted' for r in table)}; distinct configs among ended {len(set(configs))}; "
          f"processes recorded {len(ever)}, alive at the end {len(left)}; trials.csv agrees with storage: {agree}")
    ok = len(ended) == trials and len(set(configs)) == len(configs) and not left and agree
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    return run(args.trials, args.rounds, args.seed)


if __name__ == "__main__":
    sys.exit(main())
