"""The Ray executor: per-trial overhead, the cost of a pause and a resume, and the source
documents' 16-trials-on-6-slots HyperTrick vs HyperBand setup, live on Ray.

    python benchmarks/ray_overhead.py overhead [--trials 100]    # local vs ray vs Ray Tune
    python benchmarks/ray_overhead.py switch                     # pause+resume cost, live
    python benchmarks/ray_overhead.py live [--steps 100000]      # 16 trials, 6 slots, HT vs HB
    python benchmarks/ray_overhead.py crossover --switch-cost S  # simulated: where HT overtakes HB

Every Ray started here binds to 127.0.0.1 only. Figures depend on the machine's load: each
section prints the load average before it runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only, for every Ray started here

from rltune.tune.spec import spec_from_dict  # noqa: E402
from rltune.tune.study import run_study  # noqa: E402
from tune_overhead import TRAINER, trainer_cost  # noqa: E402  (the same trivial trainer, benchmarks/)

RECORDED = Path(__file__).resolve().parent.parent / "tests" / "data" / "ppo_cartpole_curves.json"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ================================================================ per-trial overhead
def overhead(trials: int, parallel: int) -> None:
    print(f"load average before: {load()}")
    direct = trainer_cost(trials)
    print(f"trivial trainer run directly: {direct * 1000:.1f} ms per run")
    for executor in ("local", "ray"):
        spec = spec_from_dict({"name": "overhead", "command": TRAINER, "metric": "reward",
                               "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                               "trials": trials, "parallel": parallel, "executor": executor,
                               "sampler": {"name": "random", "seed": 0}})
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = run_study(spec, Path(tmp) / "study")
            wall = time.perf_counter() - start
            first = min(t for r in result.records for t, kind, _ in r.timeline if kind == "start")
            last = max(t for r in result.records for t, kind, _ in r.timeline if kind == "complete")
        ok = sum(r.state == "COMPLETE" for r in result.records)
        steady = (last - first) / trials
        print(f"rltune {executor:5}: {trials} trials ({ok} complete) in {wall:.2f} s including start-up; "
              f"steady state {steady * 1000:.0f} ms per trial wall, engine overhead "
              f"{(steady * parallel - direct) * 1000:.0f} ms of slot time per trial", flush=True)
    ray_tune(trials, parallel, direct)


def ray_tune(trials: int, parallel: int, direct: float) -> None:
    try:
        import ray
        from ray import tune
    except ImportError:
        print("Ray Tune: not installed (pip install 'ray[tune]'), skipped")
        return

    def trainable(config):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "CLOUD_ML_HP_METRIC_FILE": str(Path(tmp) / "m")}
            subprocess.run(TRAINER, env=env, check=True)
        tune.report({"reward": 1.0})

    ray.init(num_cpus=parallel, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tuner = tune.Tuner(trainable, param_space={"x": tune.uniform(0, 1)},
                               tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=parallel,
                                                           metric="reward", mode="max"),
                               run_config=tune.RunConfig(storage_path=tmp, verbose=0))
            start = time.perf_counter()
            results = tuner.fit()
            wall = time.perf_counter() - start
        ok = sum(r.error is None for r in results)
        per = wall / trials
        print(f"Ray Tune     : {trials} trials ({ok} complete) in {wall:.2f} s (Ray already started) = "
              f"{per * 1000:.0f} ms per trial wall, overhead {(per * parallel - direct) * 1000:.0f} ms of "
              f"slot time per trial", flush=True)
    finally:
        ray.shutdown()


# ================================================================ pause + resume cost
def switch_cost(steps: int) -> float:
    """Successive halving of PPO CartPole trials on Ray (2 actors): for every resumed trial, the
    time its pause and resume added: checkpoint save at the pause, shipping, checkpoint load,
    compile and warm-up on the actor that resumes it, beyond the segment's own compute."""
    print(f"load average before: {load()}")
    spec = spec_from_dict({
        "name": "switch", "agent": "ppo", "env": "CartPole-v1", "budget_steps": steps,
        "fixed": {"num_envs": 4, "num_steps": 128},
        "search_space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "scale": "log"}},
        "trials": 8, "parallel": 2, "executor": "ray", "sampler": {"name": "random", "seed": 0},
        "scheduler": {"name": "successive_halving", "reduction_factor": 2, "min_steps": steps // 8}})
    with tempfile.TemporaryDirectory() as tmp:
        result = run_study(spec, Path(tmp) / "study", eval_episodes=0)
    costs = []
    for r in result.records:
        tl = r.timeline
        rate = _seconds_per_step(tl)
        for i, (t, kind, step) in enumerate(tl):
            if kind != "pause" or rate is None:
                continue
            last_report = max(tt for tt, k, _ in tl[:i] if k == "report")
            after = tl[i + 1:]
            resub = next((tt for tt, k, _ in after if k == "resubmit"), None)
            first = next(((tt, s) for tt, k, s in after if k in ("report", "complete", "pruned")), None)
            if resub is None or first is None:
                continue
            compute = (first[1] - step) * rate
            costs.append((t - last_report) + (first[0] - resub - compute))
    if not costs:
        print("no trial was paused and resumed")
        return float("nan")
    print(f"pause + resume on Ray: median {statistics.median(costs):.2f} s over {len(costs)} switches "
          f"(min {min(costs):.2f}, max {max(costs):.2f})")
    return statistics.median(costs)


def _seconds_per_step(timeline) -> float | None:
    """Seconds per env step between consecutive reports of one uninterrupted stretch."""
    rates = []
    for (t0, k0, s0), (t1, k1, s1) in zip(timeline, timeline[1:]):
        if k0 == "report" and k1 == "report" and s1 > s0:
            rates.append((t1 - t0) / (s1 - s0))
    return statistics.median(rates) if rates else None


# ================================================================ the source documents' setup
def live(steps: int) -> None:
    """16 PPO CartPole trials on 6 slots (a local Ray with 6 logical CPUs), HyperTrick vs
    HyperBand, same sampler seed (the same 16 configs)."""
    print(f"load average before: {load()}")
    from schedulers import live_spec  # the study of benchmarks/schedulers.py --live, on Ray

    for label in ("hyperband", "hypertrick"):
        spec = live_spec(label, trials=16, steps=steps, parallel=6, executor="ray")
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = run_study(spec, Path(tmp) / "study", eval_episodes=20)
            wall = time.perf_counter() - start
        best = result.best
        used = sum(r.step or 0 for r in result.records) / (16 * steps)
        pauses = sum(k == "pause" for r in result.records for _, k, _ in r.timeline)
        print(f"live {label:>10}: wall {wall:6.1f} s | best reward {best.value:6.1f} | best trial's eval "
              f"(20 ep.) {best.eval_mean:6.1f} | alpha {used:.0%} | pauses {pauses} | load {load()}", flush=True)


def crossover(curves_path: Path, costs: list[float]) -> None:
    """Replay the recorded curves (16 workers on 6 slots, 20 orderings) at each switch cost."""
    from rltune.simulate import compare, load_curves, scheduler_factory, summarize

    curves = load_curves(curves_path)
    factories = {"hyperband": scheduler_factory("hyperband"), "hypertrick": scheduler_factory("hypertrick")}
    print(f"curves: {curves_path.name}; 16 workers on 6 slots, mean of 20 orderings")
    print("switch cost (s) | HyperBand wall (s) | HyperTrick wall (s) | HT / HB")
    for cost in costs:
        res = {k: summarize(v) for k, v in compare(curves, factories, 6, workers=16, seeds=20,
                                                    switch_cost=cost).items()}
        hb, ht = res["hyperband"]["wall_time"], res["hypertrick"]["wall_time"]
        print(f"{cost:15.2f} | {hb:18.1f} | {ht:19.1f} | {ht / hb:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("overhead", "switch", "live", "crossover"))
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--switch-cost", type=float, nargs="*",
                        default=[0, 0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8])
    args = parser.parse_args(argv)
    if args.what == "overhead":
        overhead(args.trials, args.parallel)
    elif args.what == "switch":
        switch_cost(args.steps)
    elif args.what == "live":
        live(args.steps)
    else:
        crossover(RECORDED, args.switch_cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
