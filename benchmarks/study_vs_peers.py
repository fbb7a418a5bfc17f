"""The same PPO CartPole-v1 tuning study run with rltune and with its peers, side by side.

    python benchmarks/study_vs_peers.py [--peers a,b,c,d] [--trials 32] [--steps 100000]
        [--bench-python .venv-bench/bin/python] [--peer-timeout SECONDS] [--json FILE]
    python benchmarks/study_vs_peers.py --scaling [--scaling-trials 64] [--sizes 1,4,16,64]

The study: PPO on CartPole-v1, `--trials` trials of `--steps` env steps each, random search over
learning rate (1e-5..1e-2, log), gamma (0.9..0.999) and entropy coefficient (0..0.05), 2 trials
at a time. Run by

  (a) rltune, population executor (one process; all trials vmapped in one compiled program)
  (b) rltune, local executor (2 worker processes, one trial each at a time)
  (c) Stable-Baselines3 PPO + Optuna, the way RL Zoo tunes (an objective that builds, trains
      and scores an SB3 model); 2 processes share one Optuna journal-file storage
  (d) Ray Tune running SB3 PPO trials (function trainable, 2 concurrent trials, random search)
  (e) rltune, Ray executor (a local Ray started by the study, 2 actors; needs the ray extra)

The PPO settings are rltune's defaults, given to SB3 where SB3 has the knob: 4 envs, 128-step
rollouts, 4 minibatches of 128, 4 epochs, GAE lambda 0.95, clip 0.2 (value clip too),
vf_coef 0.5, max_grad_norm 0.5, Adam eps 1e-5, 64x64 tanh actor and critic, learning rate
decayed linearly to 0. Every trial uses seed 0.

What is measured, the same way for every peer:
- wall time of the whole study, from the first line of the study (Ray: including ray.init) to
  the last trial's end; each trial includes its own final evaluation (below);
- each trial's objective is the mean return of its last 100 training episodes (rltune's
  `reward`; for SB3 the mean of `model.ep_info_buffer`); the study's best trial is the one with
  the highest objective (rltune's StudyResult.best, Optuna's best_trial, Ray's best result);
- solved fraction: each trial's final policy evaluated in the trial on Gymnasium CartPole-v1,
  deterministic (greedy) actions, `--eval-episodes` (20) episodes with reset seeds 10000+i;
  a trial solves when that mean is >= 475;
- best return: the best trial's final policy on Gymnasium CartPole-v1, `--best-episodes` (100)
  deterministic episodes, reset seeds 10000+i, evaluated after the study (not timed):
  rltune's with `rltune.load_agent(trial_dir, which="last").act`, SB3's with
  `model.predict(obs, deterministic=True)`.

(c) and (d) need PyTorch, Stable-Baselines3 and Ray, which the core environment does not have:
this script runs them as subprocesses of `--bench-python` (default: this interpreter), so one
command produces the whole table (see docs/peers.md). The peers import torch/SB3/Ray only
inside their functions; (a) and (b) need rltune. `--peer-timeout` bounds each peer's study:
a peer cut short reports its completed trials and an extrapolated total, labeled as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOLVED = 475.0
EVAL_SEED = 10_000
PEER_NAMES = {
    "a": "rltune population",
    "b": "rltune local (parallel 2)",
    "c": "SB3 + Optuna (2 procs)",
    "d": "Ray Tune + SB3 (2 trials)",
    "a'": "rltune ASHA (local, parallel 2)",
    "a''": "rltune HyperTrick (local, parallel 2)",
    "c'": "RL Zoo way: SB3 + Optuna TPE + median pruner",
    "e": "rltune Ray executor (local Ray, 2 actors)",
}
# (a'), (a''): rltune's early termination, each trial a local worker's (a stopped trial frees its
# worker for the next one; in a vmapped population its slot would idle once every trial has started).
RLTUNE_PEERS = {"a": ("population", "fifo"), "b": ("local", "fifo"), "a'": ("local", {"name": "asha"}),
                "a''": ("local", {"name": "hypertrick", "num_phases": 5, "r": 0.25}),
                "e": ("ray", "fifo")}
# (c'): RL Zoo's `--optimize` defaults: TPE sampler (multivariate, 10 startup trials), MedianPruner
# (n_startup_trials=10, n_warmup_steps=n_evaluations // 3), the objective being the last
# TrialEvalCallback evaluation (5 deterministic episodes). RL Zoo's default n_evaluations is one
# per 100k steps, i.e. 1 here, with which the pruner can only judge a trial at its end: `--zoo-evaluations`
# (default 10) evaluates during training so the median pruner can stop trials early.
ZOO_STARTUP_TRIALS, ZOO_EVAL_EPISODES = 10, 5
# The searched hyperparameters: (low, high, log scale).
SPACE = {"learning_rate": (1e-5, 1e-2, True), "gamma": (0.9, 0.999, False), "ent_coef": (0.0, 0.05, False)}
# rltune's PPO defaults, written out (the SB3 peers get the same values).
PPO = {"num_envs": 4, "num_steps": 128, "num_minibatches": 4, "update_epochs": 4, "gae_lambda": 0.95,
       "clip_eps": 0.2, "vf_coef": 0.5, "max_grad_norm": 0.5, "hidden_size": 64, "hidden_layers": 2,
       "activation": "tanh", "anneal_lr": True, "seed": 0}


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its children that have been waited for."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ================================================================ evaluation (both worlds)
def evaluate(act, episodes: int, seed: int = EVAL_SEED, env_id: str = "CartPole-v1") -> dict:
    """`act(obs) -> action` on the Gymnasium env (discrete actions); episode i is reset with seed + i."""
    import gymnasium as gym
    import numpy as np

    env = gym.make(env_id)
    returns = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(int(np.asarray(act(obs)).reshape(())))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "episodes": episodes}


# ================================================================ (a), (b): rltune
def rltune_spec(name: str, executor: str, trials: int, steps: int, parallel: int, seed: int, scheduler="fifo"):
    from rltune.tune.spec import spec_from_dict

    space = {k: {"type": "float", "low": lo, "high": hi, **({"scale": "log"} if log else {})}
             for k, (lo, hi, log) in SPACE.items()}
    return spec_from_dict({"name": name, "agent": "ppo", "env": "CartPole-v1", "fixed": dict(PPO),
                           "budget_steps": steps, "search_space": space, "trials": trials,
                           "parallel": parallel, "sampler": {"name": "random", "seed": seed},
                           "executor": executor, "scheduler": scheduler})


def run_rltune(peer: str, args, out: Path, run: int = 1) -> dict:
    import rltune
    from rltune.tune.study import run_study

    executor, scheduler = RLTUNE_PEERS[peer]
    tag = {"a": "population", "b": "local", "a'": "asha", "a''": "hypertrick", "e": "ray"}[peer]
    spec = rltune_spec(f"peers-{tag}", executor, args.trials, args.steps, args.parallel, args.seed, scheduler)
    study_dir = out / (f"rltune-{tag}" if run == 1 else f"rltune-{tag}-run{run}")
    kwargs = {"population_size": args.population_size} if executor == "population" else {}
    start, cpu0, own0 = time.perf_counter(), cpu_seconds(), time.process_time()
    result = run_study(spec, study_dir, eval_episodes=args.eval_episodes, **kwargs)
    wall, cpu, own_cpu = time.perf_counter() - start, cpu_seconds() - cpu0, time.process_time() - own0
    done = [r for r in result.records if r.state in ("COMPLETE", "PRUNED")]
    trials = [{"number": r.number, "params": r.params, "value": r.value, "eval_mean": r.eval_mean,
               "wall_time": r.wall_time, "pruned": r.state == "PRUNED"} for r in done]
    row = {"peer": PEER_NAMES[peer] + ("" if run == 1 else f", run {run} (warm)"), "wall_s": wall, "cpu_s": cpu,
           "trials_planned": args.trials, "trials_done": len(done),
           "failed": sum(r.state == "FAIL" for r in result.records), "trials": trials}
    if (study_dir / "profile.json").exists():  # where the time went (rltune.profile)
        row["profile"] = json.loads((study_dir / "profile.json").read_text())
        # rltune's workers fork from a forkserver (or are Ray actors): not this process's children,
        # so their CPU time comes from their own tables, added to this process's own.
        row["cpu_s"] = own_cpu + row["profile"].get("workers", {}).get("cpu", 0.0)
    best = result.best
    if best is not None:
        trial_dir = study_dir / "trials" / str(best.number)
        agent = rltune.load_agent(trial_dir, which="last")  # the final policy, as for SB3
        row["best"] = {"number": best.number, "params": best.params, "value": best.value,
                       "eval_mean_in_trial": best.eval_mean,
                       "eval": evaluate(agent.act, args.best_episodes)}
        # rltune also keeps the checkpoint with the best training reward (load_agent's default).
        ckpt_best = rltune.load_agent(trial_dir)
        row["best"]["eval_best_checkpoint"] = evaluate(ckpt_best.act, args.best_episodes)
        summary = json.loads((study_dir / "summary.json").read_text())
        if summary.get("best_reference_eval"):  # the study's own Gymnasium check of its best trial
            row["best"]["reference_eval_in_study"] = summary["best_reference_eval"].get("mean")
    return row


# ================================================================ (c), (d): SB3 trials
def zoo_callback(trial, steps: int, n_evaluations: int):
    """RL Zoo's TrialEvalCallback: every steps / n_evaluations env steps, 5 deterministic episodes
    on a separate env; the mean is reported to Optuna and training stops when the pruner says so."""
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.env_util import make_vec_env

    class TrialEval(EvalCallback):
        def __init__(self):
            super().__init__(make_vec_env("CartPole-v1", n_envs=1), n_eval_episodes=ZOO_EVAL_EPISODES,
                             eval_freq=max(steps // n_evaluations // PPO["num_envs"], 1), deterministic=True,
                             verbose=0)
            self.eval_idx, self.is_pruned = 0, False

        def _on_step(self) -> bool:
            if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
                super()._on_step()
                self.eval_idx += 1
                self.trial.report(self.last_mean_reward, self.eval_idx)
                if self.trial.should_prune():
                    self.is_pruned = True
                    return False
            return True

    callback = TrialEval()
    callback.trial = trial
    return callback


def sb3_trial(params: dict, steps: int, eval_episodes: int, save_path: str | None, trial=None,
              n_evaluations: int = 0) -> dict:
    """Build, train and score one SB3 PPO model with rltune's PPO defaults and `params`; with an
    Optuna `trial`, RL Zoo's way: evaluated during training and pruned by the study's pruner."""
    import numpy as np
    import torch
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)  # 2 trials share 2 cores: one thread each
    start, cpu0 = time.perf_counter(), time.process_time()
    lr = float(params["learning_rate"])
    env = make_vec_env("CartPole-v1", n_envs=PPO["num_envs"], seed=PPO["seed"])
    model = SB3PPO(
        "MlpPolicy", env,
        learning_rate=lambda progress_remaining: lr * progress_remaining,  # linear decay to 0, like ours
        n_steps=PPO["num_steps"], batch_size=PPO["num_envs"] * PPO["num_steps"] // PPO["num_minibatches"],
        n_epochs=PPO["update_epochs"], gamma=float(params["gamma"]), gae_lambda=PPO["gae_lambda"],
        clip_range=PPO["clip_eps"], clip_range_vf=PPO["clip_eps"], ent_coef=float(params["ent_coef"]),
        vf_coef=PPO["vf_coef"], max_grad_norm=PPO["max_grad_norm"],
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
        seed=PPO["seed"], device="cpu", verbose=0)
    callback = zoo_callback(trial, steps, n_evaluations) if trial is not None else None
    model.learn(total_timesteps=steps, callback=callback)
    episodes = [ep["r"] for ep in model.ep_info_buffer]
    value = float(np.mean(episodes)) if episodes else float("nan")
    pruned = callback is not None and callback.is_pruned
    if callback is not None:
        value = float(callback.last_mean_reward)  # RL Zoo's objective: the last evaluation
    # RL Zoo scores nothing more of a pruned trial; every finished one gets the solved check
    ev = evaluate(lambda obs: model.predict(obs, deterministic=True)[0], eval_episodes) if not pruned else None
    if save_path:
        model.save(save_path)
    env.close()
    return {"value": value, "eval_mean": ev["mean"] if ev else None, "wall_time": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu0, "model": save_path, "pruned": pruned}


def load_sb3(path: str):
    from stable_baselines3 import PPO as SB3PPO

    # The learning-rate lambda is no use for acting; do not unpickle it.
    return SB3PPO.load(path, device="cpu", custom_objects={"learning_rate": 0.0, "lr_schedule": lambda _: 0.0})


def _log_trial(tag: str, number, res: dict, params: dict) -> None:
    ev = "pruned" if res.get("pruned") else f"eval {res['eval_mean']:.1f}"
    print(f"[{tag}] trial {number}: reward {res['value']:.1f}, {ev}, "
          f"{res['wall_time']:.1f} s, lr {params['learning_rate']:.2e} gamma {params['gamma']:.4f} "
          f"ent {params['ent_coef']:.4f}", flush=True)


# ---------------------------------------------------------------- (c) SB3 + Optuna
def _optuna_objective(steps: int, eval_episodes: int, model_dir: str, n_evaluations: int = 0):
    import optuna

    def objective(trial):
        params = {"learning_rate": trial.suggest_float("learning_rate", *SPACE["learning_rate"][:2], log=True),
                  "gamma": trial.suggest_float("gamma", *SPACE["gamma"][:2]),
                  "ent_coef": trial.suggest_float("ent_coef", *SPACE["ent_coef"][:2])}
        res = sb3_trial(params, steps, eval_episodes, os.path.join(model_dir, f"trial_{trial.number}"),
                        trial=trial if n_evaluations else None, n_evaluations=n_evaluations)
        for key in ("eval_mean", "wall_time", "cpu_s", "model"):
            trial.set_user_attr(key, res[key])
        _log_trial("rl-zoo" if n_evaluations else "sb3+optuna", trial.number, res, params)
        if res["pruned"]:
            raise optuna.TrialPruned()
        return res["value"]

    return objective


def _optuna_process(journal: str, name: str, seed: int, n_trials: int, steps: int, eval_episodes: int,
                    model_dir: str, timeout: float | None, zoo_evaluations: int = 0) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if zoo_evaluations:  # RL Zoo's sampler and pruner
        sampler = optuna.samplers.TPESampler(n_startup_trials=ZOO_STARTUP_TRIALS, seed=seed, multivariate=True)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=ZOO_STARTUP_TRIALS,
                                             n_warmup_steps=zoo_evaluations // 3)
    else:
        sampler, pruner = optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=name, storage=_journal(journal), sampler=sampler, pruner=pruner)
    study.optimize(_optuna_objective(steps, eval_episodes, model_dir, zoo_evaluations), n_trials=n_trials,
                   timeout=timeout)


def _journal(path: str):
    import optuna

    try:
        backend = optuna.storages.journal.JournalFileBackend(path)
    except AttributeError:  # optuna < 4
        backend = optuna.storages.JournalFileStorage(path)
    return optuna.storages.JournalStorage(backend)


def run_sb3_optuna(args, out: Path, zoo: bool = False) -> dict:
    """RL Zoo's way: an Optuna objective that trains an SB3 model (`zoo`: with RL Zoo's TPE
    sampler, evaluations during training and median pruner). RL Zoo's `--n-jobs` uses
    threads, which the GIL serialises; the two workers here are processes sharing a journal
    file, the way Optuna parallelises across processes."""
    import multiprocessing as mp

    import optuna

    out.mkdir(parents=True, exist_ok=True)
    journal, name = str(out / "optuna.journal"), "sb3-ppo-cartpole"
    zoo_evaluations = args.zoo_evaluations if zoo else 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reused = args.reuse_study and os.path.exists(journal)
    if not reused:
        start, cpu0 = time.perf_counter(), cpu_seconds()
        optuna.create_study(study_name=name, storage=_journal(journal), direction="maximize")
        ctx = mp.get_context("spawn")
        shares = [args.trials // args.parallel + (i < args.trials % args.parallel) for i in range(args.parallel)]
        procs = [ctx.Process(target=_optuna_process, args=(journal, name, args.seed + i, n, args.steps,
                                                           args.eval_episodes, str(out), args.peer_timeout,
                                                           zoo_evaluations))
                 for i, n in enumerate(shares) if n > 0]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    study = optuna.load_study(study_name=name, storage=_journal(journal))
    if reused:  # the study ran before: its wall time from the trials' own timestamps, no CPU figure
        finished = [t for t in study.trials if t.datetime_complete is not None]
        wall = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in study.trials)).total_seconds()
        cpu = None
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = [t for t in study.trials if t.state in ended and "wall_time" in t.user_attrs]
    trials = [{"number": t.number, "params": t.params, "value": t.value, "eval_mean": t.user_attrs["eval_mean"],
               "wall_time": t.user_attrs["wall_time"], "cpu_s": t.user_attrs.get("cpu_s"),
               "pruned": t.state == optuna.trial.TrialState.PRUNED} for t in done]
    row = {"peer": PEER_NAMES["c'" if zoo else "c"], "wall_s": wall, "cpu_s": cpu, "trials_planned": args.trials, "trials_done": len(done),
           "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials), "trials": trials,
           "versions": _versions()}
    if done:
        best = study.best_trial
        model = load_sb3(best.user_attrs["model"])
        row["best"] = {"number": best.number, "params": best.params, "value": best.value,
                       "eval_mean_in_trial": best.user_attrs["eval_mean"],
                       "eval": evaluate(lambda obs: model.predict(obs, deterministic=True)[0], args.best_episodes)}
    return row


# ---------------------------------------------------------------- (d) Ray Tune + SB3
def _ray_trainable(config: dict) -> None:
    from ray import tune

    model_dir = config.pop("_model_dir")
    steps, eval_episodes = config.pop("_steps"), config.pop("_eval_episodes")
    path = os.path.join(model_dir, f"trial_{os.getpid()}_{time.time_ns()}")
    res = sb3_trial(config, steps, eval_episodes, path)
    _log_trial("ray+sb3", "-", res, config)
    report = getattr(tune, "report", None)
    if report is None:  # older Ray
        from ray import train

        report = train.report
    report({"reward": res["value"], "eval_mean": res["eval_mean"], "trial_wall_time": res["wall_time"],
            "trial_cpu_s": res["cpu_s"], "model": res["model"]})


def run_ray_tune(args, out: Path) -> dict:
    # loopback only: Ray reads this once, when it is imported (else its GCS binds every interface)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    out.mkdir(parents=True, exist_ok=True)
    # Ray starts its workers at niceness 15 (its `worker_niceness` default): on a machine shared with
    # other jobs they would then get a small share of the CPU. Trials run at normal priority here,
    # like every other peer's.
    os.environ.setdefault("RAY_worker_niceness", "0")
    start = time.perf_counter()
    ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=True, _node_ip_address="127.0.0.1",
             logging_level="warning", configure_logging=True)
    init_s = time.perf_counter() - start
    lo, hi, _ = SPACE["learning_rate"]
    space = {"learning_rate": tune.loguniform(lo, hi), "gamma": tune.uniform(*SPACE["gamma"][:2]),
             "ent_coef": tune.uniform(*SPACE["ent_coef"][:2]),
             "_model_dir": str(out.resolve()), "_steps": args.steps, "_eval_episodes": args.eval_episodes}
    run_config_cls = getattr(tune, "RunConfig", None)
    if run_config_cls is None:
        from ray.train import RunConfig as run_config_cls
    tuner = tune.Tuner(
        tune.with_resources(_ray_trainable, {"cpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(num_samples=args.trials, metric="reward", mode="max",
                                    search_alg=BasicVariantGenerator(random_state=args.seed,
                                                                     max_concurrent=args.parallel),
                                    time_budget_s=args.peer_timeout),
        run_config=run_config_cls(name="ray-sb3", storage_path=str((out / "ray_results").resolve()), verbose=0))
    grid = tuner.fit()
    wall = time.perf_counter() - start
    done = [r for r in grid if r.error is None and r.metrics and "reward" in r.metrics]
    trials = [{"number": i, "params": {k: r.config[k] for k in SPACE}, "value": r.metrics["reward"],
               "eval_mean": r.metrics["eval_mean"], "wall_time": r.metrics["trial_wall_time"],
               "cpu_s": r.metrics.get("trial_cpu_s")} for i, r in enumerate(done)]
    row = {"peer": PEER_NAMES["d"], "wall_s": wall, "ray_init_s": init_s, "trials_planned": args.trials,
           "trials_done": len(done), "failed": sum(r.error is not None for r in grid), "trials": trials,
           "versions": _versions()}
    if done:
        best = grid.get_best_result(metric="reward", mode="max")
        model = load_sb3(best.metrics["model"])
        row["best"] = {"number": None, "params": {k: best.config[k] for k in SPACE},
                       "value": best.metrics["reward"], "eval_mean_in_trial": best.metrics["eval_mean"],
                       "eval": evaluate(lambda obs: model.predict(obs, deterministic=True)[0], args.best_episodes)}
    ray.shutdown()
    # getrusage does not see Ray's worker processes (children of the raylet, never reaped into the
    # driver's account), so no study CPU figure: the table shows the trials' own CPU time instead.
    row["cpu_s"] = None
    return row


def _versions() -> dict:
    import importlib.metadata as md

    found = {}
    for name in ("torch", "stable-baselines3", "optuna", "gymnasium", "ray"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


# ================================================================ driving and reporting
def run_peer(peer: str, args, out: Path, run: int = 1) -> dict:
    if peer in RLTUNE_PEERS:
        return run_rltune(peer, args, out, run)
    # SB3 / Ray live in the bench environment: a subprocess of --bench-python writes its row.
    tag = peer.replace("'", "p")
    result = out / f"peer_{tag}.json"
    cmd = [args.bench_python, str(Path(__file__).resolve()), "--worker", tag, "--result", str(result),
           "--out", str(out / f"peer_{tag}"), "--trials", str(args.trials), "--steps", str(args.steps),
           "--parallel", str(args.parallel), "--seed", str(args.seed), "--eval-episodes", str(args.eval_episodes),
           "--best-episodes", str(args.best_episodes), "--zoo-evaluations", str(args.zoo_evaluations)] + \
        (["--reuse-study"] if args.reuse_study else [])
    if args.peer_timeout:
        cmd += ["--peer-timeout", str(args.peer_timeout)]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or not result.exists():
        return {"peer": PEER_NAMES[peer], "error": f"{' '.join(cmd[:2])} ... exited {proc.returncode}"}
    return json.loads(result.read_text())


def finish_row(row: dict) -> dict:
    """Derived figures; a peer cut short gets an extrapolated total."""
    if "error" in row:
        return row
    done, planned = row["trials_done"], row["trials_planned"]
    row["trials_per_hour"] = done / row["wall_s"] * 3600 if done else 0.0
    row["partial"] = done < planned
    row["wall_full_s"] = row["wall_s"] * planned / done if done else math.nan  # = wall_s when complete
    row["pruned"] = sum(bool(t.get("pruned")) for t in row["trials"])
    row["solved"] = sum(t["eval_mean"] is not None and t["eval_mean"] >= SOLVED for t in row["trials"])
    walls = [t["wall_time"] for t in row["trials"] if t.get("wall_time") is not None]
    row["trial_wall_mean_s"] = sum(walls) / len(walls) if walls else math.nan
    cpus = [t["cpu_s"] for t in row["trials"] if t.get("cpu_s") is not None]
    row["trial_cpu_sum_s"] = sum(cpus) if cpus else None
    return row


def print_table(rows: list[dict], args) -> None:
    print()
    print(f"PPO CartPole-v1 study: {args.trials} trials x {args.steps} env steps, random search over "
          f"lr/gamma/ent_coef, {args.parallel} at a time")
    head = (f"| peer | wall | CPU time | trials/hour | mean trial wall | solved (>= {SOLVED:.0f}, "
            f"{args.eval_episodes} ep.) | stopped early | best trial's objective | best eval ({args.best_episodes} ep., deterministic) |")
    print(head)
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['peer']} | failed: {r['error']} | | | | | | | |")
            continue
        wall = f"{r['wall_s']:.1f} s"
        if r["partial"]:
            wall += f" ({r['trials_done']}/{r['trials_planned']} trials; extrapolated {r['wall_full_s']:.0f} s)"
        cpu = f"{r['cpu_s']:.0f} s" if r.get("cpu_s") is not None else \
            f">= {r['trial_cpu_sum_s']:.0f} s (trials only)" if r.get("trial_cpu_sum_s") else "-"
        best = r.get("best")
        print(f"| {r['peer']} | {wall} | {cpu} | {r['trials_per_hour']:.0f} | {r['trial_wall_mean_s']:.1f} s | "
              f"{r['solved']}/{r['trials_done']} | {r['pruned']} | {best['value']:.1f} | "
              f"{best['eval']['mean']:.1f} +- {best['eval']['std']:.1f} |" if best else
              f"| {r['peer']} | {wall} | {cpu} | {r['trials_per_hour']:.0f} | - | 0/0 | - | - | - |")
    ours = [r for r in rows if r.get("peer", "").startswith("rltune") and "error" not in r and r.get("best")]
    theirs = [r for r in rows if not r.get("peer", "").startswith("rltune") and "error" not in r and r.get("best")]
    for r in theirs:
        for ref in ours:
            ratio = r["wall_full_s"] / ref["wall_full_s"]
            note = " (extrapolated from the completed trials)" if r["partial"] or ref["partial"] else ""
            cpu, scale = "", r["trials_planned"] / max(r["trials_done"], 1)
            if ref.get("cpu_s") and r.get("cpu_s"):
                cpu = f" ({r['cpu_s'] * scale / ref['cpu_s']:.1f}x less CPU time)"
            elif ref.get("cpu_s") and r.get("trial_cpu_sum_s"):
                cpu = f" (>= {r['trial_cpu_sum_s'] * scale / ref['cpu_s']:.1f}x less CPU time, counting its trials only)"
            print(f"{ref['peer']} is {ratio:.1f}x faster than {r['peer']}{note}{cpu}, "
                  f"best return {ref['best']['eval']['mean']:.1f} vs {r['best']['eval']['mean']:.1f}")
    for ref in ours:
        b = ref["best"]
        extra = []
        if "eval_best_checkpoint" in b:
            extra.append(f"best-reward checkpoint {b['eval_best_checkpoint']['mean']:.1f}")
        if b.get("reference_eval_in_study") is not None:
            extra.append(f"the study's own Gymnasium check ({args.eval_episodes} ep.) {b['reference_eval_in_study']:.1f}")
        if extra:
            print(f"({ref['peer']}'s best trial: " + "; ".join(extra) + ")")


PROFILE_PHASES = ("start", "setup", "compile", "train", "log", "checkpoint", "eval", "wait", "other")


def print_profile(rows: list[dict]) -> None:
    """Where each rltune study's time went: seconds summed over its worker processes (a worker
    that waits for a task or a decision is idle), and the driver's own time."""
    rows = [r for r in rows if r.get("profile")]
    if not rows:
        return
    print()
    print("Profile (seconds; workers: summed over worker processes, `wait` = idle; from STUDY/profile.json)")
    print("| peer | study wall | workers x wall | workers' CPU | " + " | ".join(PROFILE_PHASES)
          + " | driver: start | storage | shutdown | driver's CPU |")
    print("|---|---|---|---|" + "---|" * len(PROFILE_PHASES) + "---|---|---|---|")
    for r in rows:
        p = r["profile"]
        w, d = p["workers"], p["driver"]
        cells = " | ".join(f"{w.get(k, 0.0):.1f}" for k in PROFILE_PHASES)
        print(f"| {r['peer']} | {p['study_wall']:.1f} | {p['worker_processes']} x {w.get('wall', 0.0) / max(p['worker_processes'], 1):.1f} | "
              f"{w.get('cpu', 0.0):.1f} | {cells} | {d.get('start', 0.0):.1f} | {d.get('storage', 0.0):.1f} | "
              f"{d.get('shutdown', 0.0):.1f} | {d.get('cpu', 0.0):.1f} |")


def scaling(args, out: Path) -> list[dict]:
    """Wall time of one `--scaling-trials` study vs population size (rltune population executor)."""
    from rltune.tune.study import run_study

    rows = []
    for k in [int(s) for s in args.sizes.split(",")]:
        spec = rltune_spec(f"scaling-{k}", "population", args.scaling_trials, args.steps, 1, args.seed)
        start = time.perf_counter()
        result = run_study(spec, out / f"scaling-{k}", eval_episodes=0, population_size=k)
        wall = time.perf_counter() - start
        done = sum(r.state == "COMPLETE" for r in result.records)
        steps = sum(r.step or 0 for r in result.records if r.state == "COMPLETE")
        rows.append({"population_size": k, "wall_s": wall, "trials_done": done, "env_steps": steps,
                     "steps_per_s": steps / wall})
        print(f"population {k:>3}: {done}/{args.scaling_trials} trials in {wall:.1f} s, "
              f"{steps / wall:,.0f} env steps/s aggregate", flush=True)
    print()
    print(f"| population size | wall ({args.scaling_trials} trials x {args.steps} steps) | aggregate env steps/s "
          "| trials/hour |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['population_size']} | {r['wall_s']:.1f} s | {r['steps_per_s']:,.0f} | "
              f"{r['trials_done'] / r['wall_s'] * 3600:,.0f} |")
    return rows


def _load() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default="a,b,c,d", help="which of a,b,c,d,a',a'',c' to run (default a,b,c,d)")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per trial")
    parser.add_argument("--parallel", type=int, default=2, help="trials at a time for (b), (c), (d)")
    parser.add_argument("--population-size", type=int, default=None, help="(a): default auto (= trials)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--eval-episodes", type=int, default=20, help="per-trial evaluation (solved fraction)")
    parser.add_argument("--best-episodes", type=int, default=100, help="evaluation of the best trial")
    parser.add_argument("--bench-python", default=sys.executable,
                        help="interpreter with torch, stable-baselines3, optuna and ray for (c), (d)")
    parser.add_argument("--peer-timeout", type=float, default=None,
                        help="seconds after which (c)/(d) start no new trial; the total is then extrapolated")
    parser.add_argument("--out", default=None, help="where studies go (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="print where each rltune study's time went (STUDY/profile.json; default on)")
    parser.add_argument("--scaling", action="store_true", help="run the population-size scaling figure instead")
    parser.add_argument("--scaling-trials", type=int, default=64)
    parser.add_argument("--sizes", default="1,4,16,64")
    parser.add_argument("--reuse-study", action="store_true",
                        help="(c): rebuild the row from the Optuna journal already under --out (wall time from "
                        "the trials' timestamps) instead of running the study again")
    parser.add_argument("--table", default=None, help="print the table of rows saved with --json, run nothing")
    parser.add_argument("--zoo-evaluations", type=int, default=10,
                        help="(c'): evaluations during each trial, for RL Zoo's median pruner (RL Zoo's own "
                        "default, one per 100k steps, gives the pruner nothing to stop early)")
    parser.add_argument("--worker", choices=("c", "d", "cp"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # a subprocess in the bench environment
        out = Path(args.out)
        row = run_ray_tune(args, out) if args.worker == "d" else run_sb3_optuna(args, out, zoo=args.worker == "cp")
        Path(args.result).write_text(json.dumps(row, indent=1, default=str))
        return 0

    if args.table:
        saved = [finish_row(r) for r in json.loads(Path(args.table).read_text())]
        print_table(saved, args)
        print_profile(saved)
        return 0
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="study_vs_peers-")
        args.out = tmp.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"start {time.strftime('%H:%M:%S')}, {os.cpu_count()} CPUs, {_load()}; studies under {out}", flush=True)
    try:  # cold or warm: what JAX's persistent compilation cache holds before the first study
        from rltune.compile_cache import cache_dir, enabled_by_environment

        entries = len(list(cache_dir().glob("*"))) if cache_dir().exists() else 0
        print(f"compile cache {cache_dir()}: {'on' if enabled_by_environment() else 'off'}, {entries} entries "
              f"({'cold' if entries == 0 else 'warm'})", flush=True)
    except ImportError:  # rltune not importable here: rltune peers will say so
        pass
    if args.scaling:
        rows = scaling(args, out)
    else:
        rows = []
        peers = [p.strip() for p in args.peers.split(",") if p.strip()]
        for peer in peers:
            if peer not in PEER_NAMES:
                parser.error(f"unknown peer {peer!r}: choose from {','.join(PEER_NAMES)}")
            if peer not in RLTUNE_PEERS and peers.count(peer) > 1:
                parser.error(f"peer {peer!r} is listed twice: only rltune's peers can run again (warm)")
        seen: dict[str, int] = {}
        for peer in peers:
            seen[peer] = seen.get(peer, 0) + 1
            print(f"--- ({peer}) {PEER_NAMES[peer]}, start {time.strftime('%H:%M:%S')}, {_load()}", flush=True)
            # an rltune peer listed again runs again, its compiled programs now in the cache: "warm"
            row = finish_row(run_peer(peer, args, out, run=seen[peer]))
            rows.append(row)
            if "error" not in row:
                print(f"--- ({peer}) done: {row['trials_done']} trials in {row['wall_s']:.1f} s, {_load()}", flush=True)
        print_table(rows, args)
        if args.profile:
            print_profile(rows)
    print(f"end {time.strftime('%H:%M:%S')}, {_load()}  (the machine is shared: absolute timings are noisy)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
