"""Population-based training vs random search with the same compute, and vs Ray Tune's PBT.

    python benchmarks/pbt.py [--members 16] [--steps 100000] [--interval 10000]
        [--peers a,a2,b,c] [--bench-python .venv-bench/bin/python] [--plot docs/pbt_schedule.png]

The task: PPO on CartPole-v1 with a *constant* learning rate (`anneal_lr: false`), searched on
1e-4..1e-1 (log) together with the entropy coefficient (0..0.03). A constant learning rate is
not enough here: a large one learns fast and then tends to collapse (the policy reaches 500 and
falls away again), a small one is stable but slow in the budget. What works is a schedule,
large early and smaller late, which rltune's PPO hard-codes as `anneal_lr`; PBT has to find one
on its own. CartPole-v1 is an env both sides run (Stable-Baselines3 for (c)).

  (a) rltune PBT on the population executor: `--members` members, one vmapped program, every
      `--interval` steps the bottom quarter copies the top quarter and perturbs (x0.8/x1.2)
      or resamples (p = 0.25) the learning rate and entropy coefficient;
  (a2) the same PBT study on the local executor (`--parallel` worker processes, members paused
      at each interval, copies made through checkpoint files);
  (b) rltune random search, same members, same sampler seed (so the same initial
      hyperparameters as (a)), same executor and per-trial budget: the same compute, no PBT;
  (c) Ray Tune's PopulationBasedTraining over Stable-Baselines3 PPO (one process per trial,
      checkpoints through files), same space, interval, quantile and perturbation; needs the
      bench venv of docs/peers.md (torch, SB3, Ray), run as a subprocess of `--bench-python`.

Measured: wall time of the whole study; the best member's final training return (mean of its
last 100 episodes) and its final policy on Gymnasium CartPole-v1, 100 deterministic episodes
(reset seeds 10000+i); the population's best training return at 25/50/75/100 % of the compute
(every member has run that fraction of its budget). `--plot` draws the best PBT member's
learning-rate schedule along its lineage and its return next to the best random-search trial.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_vs_peers import _load, evaluate  # noqa: E402  (one evaluation for both)



SPACE = {"learning_rate": (1e-4, 1e-1, True), "ent_coef": (0.0, 0.03, False)}
PPO = {"num_envs": 4, "num_steps": 128, "num_minibatches": 4, "update_epochs": 4, "gamma": 0.99,
       "gae_lambda": 0.95, "clip_eps": 0.2, "vf_coef": 0.5, "max_grad_norm": 0.5, "hidden_size": 64,
       "hidden_layers": 2, "activation": "tanh", "anneal_lr": False, "seed": 0}
NAMES = {"a": "rltune PBT (population)", "a2": "rltune PBT (local executor, 2 workers)",
         "b": "rltune random search (population)", "c": "Ray Tune PBT + SB3 PPO"}
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


# ================================================================ (a), (b): rltune
def rltune_spec(peer: str, args):
    from rltune.tune.spec import spec_from_dict

    space = {k: {"type": "float", "low": lo, "high": hi, **({"scale": "log"} if log else {})}
             for k, (lo, hi, log) in SPACE.items()}
    scheduler = ({"name": "pbt", "interval": args.interval, "quantile": 0.25, "resample_probability": 0.25,
                  "perturb": [0.8, 1.2], "seed": args.seed} if peer in ("a", "a2") else "fifo")
    executor = {"executor": "local", "parallel": args.parallel} if peer == "a2" else {"executor": "population"}
    return spec_from_dict({"name": f"pbt-bench-{peer}", "agent": "ppo", "env": args.env, "fixed": dict(PPO),
                           "budget_steps": args.steps, "search_space": space, "trials": args.members,
                           "sampler": {"name": "random", "seed": args.seed}, **executor,
                           "scheduler": scheduler})


def run_rltune(peer: str, args, out: Path) -> dict:
    import rltune
    from rltune.tune.study import run_study

    study_dir = out / f"rltune-{peer}"
    start = time.perf_counter()
    # the same segment grid for both: a PBT interval is a segment end in (a); (b) reports there too
    result = run_study(rltune_spec(peer, args), study_dir, eval_episodes=0,
                       population_size=None if peer == "a2" else args.members)
    wall = time.perf_counter() - start
    curves = {r.number: _curve(study_dir / "trials" / str(r.number)) for r in result.records}
    finals = [r.value for r in result.records if r.state == "COMPLETE" and r.value is not None]
    row = {"peer": NAMES[peer], "wall_s": wall, "members": args.members,
           "complete": sum(r.state == "COMPLETE" for r in result.records), "study_dir": str(study_dir),
           "at_compute": _best_at_fractions(curves, args.steps),
           "mean_final": sum(finals) / len(finals) if finals else None,
           "finals": sorted(finals)}
    best = result.best
    if best is not None:
        agent = rltune.load_agent(study_dir / "trials" / str(best.number), which="last")
        row["best"] = {"number": best.number, "value": best.value,
                       "eval": evaluate(agent.act, args.best_episodes, env_id=args.env)}
        pbt = study_dir / "trials" / str(best.number) / "pbt.json"
        if pbt.exists():
            row["best"]["copies"] = len(json.loads(pbt.read_text())["pbt_lineage"])
    return row


def _curve(trial_dir: Path) -> dict[int, float]:
    path = trial_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.open()]
    return {d["step"]: d["reward"] for d in lines if d.get("reward") is not None}


def _best_at_fractions(curves: dict[int, dict[int, float]], steps: int) -> dict[str, float | None]:
    """The best member's training return once every member has run a fraction of its budget
    (give or take one rollout: both sides end a segment on a whole rollout, SB3 past the
    budget, rltune before it)."""
    out = {}
    rollout = PPO["num_envs"] * PPO["num_steps"]
    for f in FRACTIONS:
        at = []
        for curve in curves.values():
            done = [s for s in curve if s <= f * steps + rollout]
            if done:
                at.append(curve[max(done)])
        out[f"{int(f * 100)}%"] = max(at) if at else None
    return out


# ================================================================ (c): Ray Tune PBT + SB3
def _sb3_model(config: dict, env):
    import torch
    from stable_baselines3 import PPO as SB3PPO

    lr = float(config["learning_rate"])
    return SB3PPO("MlpPolicy", env, learning_rate=lr, n_steps=PPO["num_steps"],
                  batch_size=PPO["num_envs"] * PPO["num_steps"] // PPO["num_minibatches"],
                  n_epochs=PPO["update_epochs"], gamma=PPO["gamma"], gae_lambda=PPO["gae_lambda"],
                  clip_range=PPO["clip_eps"], clip_range_vf=PPO["clip_eps"], ent_coef=float(config["ent_coef"]),
                  vf_coef=PPO["vf_coef"], max_grad_norm=PPO["max_grad_norm"],
                  policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
                  seed=PPO["seed"], device="cpu", verbose=0)


def _ray_pbt_trainable(config: dict) -> None:
    """One SB3 PPO member: train `interval` steps, report, checkpoint; PBT restores it from
    another member's checkpoint with new hyperparameters when it exploits."""
    import numpy as np
    import torch
    from ray import tune
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    steps, interval = config["_steps"], config["_interval"]
    env = make_vec_env(config["_env"], n_envs=PPO["num_envs"], seed=PPO["seed"])
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        model = _sb3_model(config, env)
    else:  # exploit: the source's weights and optimizer, this member's (explored) hyperparameters
        lr, ent = float(config["learning_rate"]), float(config["ent_coef"])
        with checkpoint.as_directory() as d:
            model = SB3PPO.load(os.path.join(d, "model.zip"), env=env, device="cpu",
                                custom_objects={"learning_rate": lr, "lr_schedule": lambda _: lr, "ent_coef": ent})
    while model.num_timesteps < steps:
        model.learn(total_timesteps=interval, reset_num_timesteps=False)
        episodes = [ep["r"] for ep in model.ep_info_buffer]
        with tempfile.TemporaryDirectory() as d:
            model.save(os.path.join(d, "model.zip"))
            tune.report({"reward": float(np.mean(episodes)) if episodes else 0.0,
                         "timesteps": int(model.num_timesteps)},
                        checkpoint=tune.Checkpoint.from_directory(d))
    env.close()


def run_ray_pbt(args, out: Path) -> dict:
    # loopback only: Ray reads this once, when it is imported (else its GCS binds every interface)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_worker_niceness", "0")
    start = time.perf_counter()
    ray.init(num_cpus=args.parallel, include_dashboard=False, logging_level="warning",
             _node_ip_address="127.0.0.1")  # loopback only
    (lo, hi, _), (elo, ehi, _) = SPACE["learning_rate"], SPACE["ent_coef"]
    mutations = {"learning_rate": tune.loguniform(lo, hi), "ent_coef": tune.uniform(elo, ehi)}
    pbt = PopulationBasedTraining(time_attr="timesteps", perturbation_interval=args.interval,
                                  hyperparam_mutations=mutations, quantile_fraction=0.25,
                                  resample_probability=0.25, perturbation_factors=(1.2, 0.8))
    # Ray's PBT draws from the global `random` module (it takes no seed); the initial
    # population comes from numpy's global stream: seed both
    import random

    import numpy as np

    random.seed(args.seed)
    np.random.seed(args.seed)
    space = {**mutations, "_steps": args.steps, "_interval": args.interval, "_env": args.env}
    tuner = tune.Tuner(
        tune.with_resources(_ray_pbt_trainable, {"cpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(num_samples=args.members, scheduler=pbt, metric="reward", mode="max"),
        # stop at the budget before PBT sees the last report: PBT ranks only unfinished members,
        # so without it the last two live ones copy each other's earlier checkpoints for ever
        # (each report at the budget is the bottom quantile's, exploited back to the other's past)
        run_config=tune.RunConfig(name="ray-pbt", storage_path=str((out / "ray_results").resolve()), verbose=0,
                                  stop={"timesteps": args.steps},
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=4)))
    grid = tuner.fit()
    wall = time.perf_counter() - start
    curves = {i: {int(m["timesteps"]): float(m["reward"]) for _, m in r.metrics_dataframe.iterrows()}
              for i, r in enumerate(grid) if r.metrics_dataframe is not None}
    finals = [c[max(c)] for c in curves.values() if c]
    row = {"peer": NAMES["c"], "wall_s": wall, "members": args.members,
           "complete": sum(r.error is None for r in grid), "at_compute": _best_at_fractions(curves, args.steps),
           "mean_final": sum(finals) / len(finals) if finals else None}
    best = grid.get_best_result(metric="reward", mode="max")
    if best is not None and best.checkpoint is not None:
        from stable_baselines3 import PPO as SB3PPO

        with best.checkpoint.as_directory() as d:
            model = SB3PPO.load(os.path.join(d, "model.zip"), device="cpu",
                                custom_objects={"learning_rate": 0.0, "lr_schedule": lambda _: 0.0})
        row["best"] = {"number": None, "value": best.metrics["reward"],
                       "eval": evaluate(lambda obs: model.predict(obs, deterministic=True)[0],
                                        args.best_episodes, env_id=args.env)}
    ray.shutdown()
    return row


# ================================================================ the lineage plot
def plot_lineage(study_dir: Path, baseline_dir: Path | None, path: Path) -> None:
    """The best PBT member's learning rate and entropy coefficient along its lineage (a step
    function, a mark at every copy) and its training return, against the best random-search trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = json.loads((study_dir / "summary.json").read_text())
    number = summary["best"]["number"]
    pbt = json.loads((study_dir / "trials" / str(number) / "pbt.json").read_text())
    schedule = pbt["pbt_schedule"]
    end = max(_curve(study_dir / "trials" / str(number)))
    fig, (ax_lr, ax_ent, ax_ret) = plt.subplots(3, 1, figsize=(7, 6.4), sharex=True,
                                                gridspec_kw={"height_ratios": (1, 1, 1.6)})
    steps = [e[0] for e in schedule] + [end]
    for name, axis, color in (("learning_rate", ax_lr, "tab:blue"), ("ent_coef", ax_ent, "tab:orange")):
        values = [e[1][name] for e in schedule]
        axis.step(steps, values + values[-1:], where="post", color=color)
        axis.set_ylabel(name)
        for e in schedule[1:]:
            axis.axvline(e[0], color="grey", lw=0.6, ls=":")
    ax_lr.set_yscale("log")
    ax_lr.set_title(f"best PBT member (trial {number}): hyperparameters along its lineage")
    ax_ret.plot(*zip(*sorted(_lineage_curve(study_dir, number).items())), label=f"PBT best (trial {number})")
    if baseline_dir is not None and (baseline_dir / "summary.json").exists():
        b = json.loads((baseline_dir / "summary.json").read_text())["best"]["number"]
        ax_ret.plot(*zip(*sorted(_curve(baseline_dir / "trials" / str(b)).items())),
                    label=f"random search best (trial {b}, constant)", alpha=0.8)
    for e in schedule[1:]:
        ax_ret.axvline(e[0], color="grey", lw=0.6, ls=":")
    ax_ret.set_xlabel("env steps")
    ax_ret.set_ylabel("training return (last 100 episodes)")
    ax_ret.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _lineage_curve(study_dir: Path, number: int, until: int | None = None) -> dict[int, float]:
    """Training return along a member's lineage: each ancestor's until it was copied, then its own."""
    trial = study_dir / "trials" / str(number)
    own = {s: v for s, v in _curve(trial).items() if until is None or s <= until}
    copies = [c for c in json.loads((trial / "pbt.json").read_text())["pbt_lineage"]
              if until is None or c["step"] <= until]
    if not copies:
        return own
    last = copies[-1]
    curve = _lineage_curve(study_dir, last["from"], last["step"])
    curve.update({s: v for s, v in own.items() if s > last["step"]})
    return curve


# ================================================================ driving and reporting
def print_table(rows: list[dict]) -> None:
    head = ["peer", "wall", "best final return (train)", "best eval (100 ep.)", "mean final return (all)",
            *(f"best at {k} compute" for k in ("25%", "50%", "75%", "100%"))]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        if "error" in r:
            print(f"| {r['peer']} | {r['error']} |")
            continue
        best = r.get("best") or {}
        ev = best.get("eval")
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        ev_text = "-" if ev is None else f"{ev['mean']:.1f} +- {ev['std']:.1f}"
        print(f"| {r['peer']} | {r['wall_s']:.1f} s | {fmt(best.get('value'))} | {ev_text} | "
              f"{fmt(r.get('mean_final'))} | "
              + " | ".join(fmt(r["at_compute"].get(k)) for k in ("25%", "50%", "75%", "100%")) + " |")


def run_peer(peer: str, args, out: Path) -> dict:
    """Each peer in a fresh process (no compile cache or warm imports carried from another)."""
    python = sys.executable if peer != "c" else args.bench_python
    if not Path(python).exists():
        return {"peer": NAMES[peer], "error": f"not run: no bench interpreter at {python} "
                "(torch, SB3 and Ray; see docs/peers.md)"}
    result = out / f"peer_{peer}.json"
    cmd = [python, str(Path(__file__).resolve()), "--worker", peer, "--result", str(result),
           "--out", str(out), "--members", str(args.members), "--steps", str(args.steps),
           "--interval", str(args.interval), "--env", args.env, "--parallel", str(args.parallel),
           "--seed", str(args.seed), "--best-episodes", str(args.best_episodes)]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or not result.exists():
        return {"peer": NAMES[peer], "error": f"{' '.join(cmd[:2])} ... exited {proc.returncode}"}
    return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default="a,a2,b,c", help="which of a,a2,b,c to run")
    parser.add_argument("--env", default="CartPole-v1", help="a gymnax id that Gymnasium also has")
    parser.add_argument("--members", type=int, default=16, help="population size = trials of (b)")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per member")
    parser.add_argument("--interval", type=int, default=10_000, help="PBT interval (env steps)")
    parser.add_argument("--parallel", type=int, default=2, help="(a2), (c): trials at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--best-episodes", type=int, default=100)
    parser.add_argument("--bench-python", default=".venv-bench/bin/python",
                        help="interpreter with torch, stable-baselines3 and ray for (c)")
    parser.add_argument("--out", default=None, help="keep the studies here (default: a temporary directory)")
    parser.add_argument("--plot", default=None, help="write the lineage/schedule figure of (a)'s best member")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--worker", choices=tuple(NAMES), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one peer, in its own process ((c) inside the bench environment)
        out = Path(args.out)
        row = run_ray_pbt(args, out / "peer_c") if args.worker == "c" else run_rltune(args.worker, args, out)
        Path(args.result).write_text(json.dumps(row, indent=1, default=str))
        return 0
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="pbt-bench-")
        args.out = tmp.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"start {time.strftime('%H:%M:%S')}, {os.cpu_count()} CPUs, {_load()}", flush=True)
    rows = []
    for peer in [p.strip() for p in args.peers.split(",") if p.strip()]:
        if peer not in NAMES:
            parser.error(f"unknown peer {peer!r}: choose from {','.join(NAMES)}")
        print(f"--- ({peer}) {NAMES[peer]}, start {time.strftime('%H:%M:%S')}, {_load()}", flush=True)
        rows.append(run_peer(peer, args, out))
        print(f"--- ({peer}) end {time.strftime('%H:%M:%S')}, {_load()}", flush=True)
    print_table(rows)
    if args.plot and (out / "rltune-a" / "summary.json").exists():
        plot_lineage(out / "rltune-a", out / "rltune-b", Path(args.plot))
        print(f"figure: {args.plot}")
    print(f"end {time.strftime('%H:%M:%S')}, {_load()}  (shared machine: wall times are upper bounds)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
