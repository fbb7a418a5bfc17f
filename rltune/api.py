"""The one-call Python API: `rltune.train(...)` and `rltune.tune(...)`.

    run = rltune.train("ppo", env="CartPole-v1", total_steps=100_000, learning_rate=3e-4)
    run.summary["eval"]["mean"]; run.act(obs); run.directory
    result = rltune.tune(agent="ppo", env="Acrobot-v1", trials=8, budget_steps=50_000)

`train` resolves the config as the CLI does (defaults < preset < `config` file < keyword
arguments) and writes the same run directory; `tune` takes the CLI's arguments as keywords.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """A finished training run: its directory, summary and config; `act` loads the policy."""

    agent: str
    directory: Path
    config: Any
    summary: dict[str, Any]
    preset: str | None = None
    _loaded: Any = field(default=None, repr=False)

    def load(self, which: str = "best"):
        from rltune.policy import load_agent

        return load_agent(self.directory, which)

    def act(self, obs, deterministic: bool = True):
        """One observation -> one action; a batch -> a batch (the best checkpoint's policy)."""
        if self._loaded is None:
            self._loaded = self.load()
        return self._loaded.act(obs, deterministic)


def train(agent: str, env: str | None = None, *, total_steps: int | None = None, config: str | Path | None = None,
          preset: str = "auto", out: str | Path | None = None, eval_episodes: int = 10,
          eval_every: int | None = None, eval_every_episodes: int = 10,
          segment_steps: int | None = None, progress: bool = False, **hyperparameters) -> Run:
    """Train `agent` on `env`; keyword arguments are config fields (as the CLI's flags).
    `eval_every` / `eval_every_episodes`: the periodic evaluation that picks the best
    checkpoint, as `rltune train --eval-every` (None: 20 per run; 0: none)."""
    from rltune.cli import check_periodic_eval
    from rltune.config import load_yaml
    from rltune.envs import env_info
    from rltune.errors import UsageError
    from rltune.presets import resolve_config
    from rltune.runner import RunOptions
    from rltune.runner import train as run_training

    overrides = dict(hyperparameters)
    if env is not None:
        overrides["env"] = env
    if total_steps is not None:
        overrides["total_steps"] = total_steps
    file_values = load_yaml(config) if config else {}
    file_agent = file_values.pop("agent", agent)
    if file_agent != agent:
        raise UsageError("agent", f"{config} is a config for {file_agent!r}, not {agent!r}")
    resolved = resolve_config(agent, overrides, file_values, preset_mode=preset, source=str(config or "arguments"))
    for note in resolved.notes:  # which preset applied, or that the env has none
        print(note)
    cfg = resolved.config
    if eval_episodes < 0:
        raise UsageError("eval_episodes", "must be >= 0")
    check_periodic_eval(eval_every, eval_every_episodes, "eval_every", "eval_every_episodes")
    env_info(cfg.env, cfg.backend)  # unknown env: a usage error before anything is written
    directory = Path(out or f"runs/{cfg.env.replace('/', '_')}-{agent}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_training(agent, cfg, directory,
                           options=RunOptions(segment_steps=segment_steps, eval_episodes=eval_episodes,
                                              eval_every=eval_every, eval_every_episodes=eval_every_episodes,
                                              progress=progress))
    return Run(agent, directory, cfg, summary, resolved.preset)


def tune(spec: str | Path | None = None, *, agent: str | None = None, env: str | None = None,
         out: str | Path | None = None, trials: int | None = None, parallel: int | None = None,
         budget_steps: int | None = None, sampler: str | None = None, scheduler: str | None = None,
         seed: int | None = None, executor: str | None = None, storage: str | None = None,
         resume: bool = False, eval_episodes: int = 10, population_size: int | None = None):
    """Run a study as `rltune tune` does (same arguments); returns its StudyResult
    (`.best.params`, `.best.value`, `.study_dir`). Call it under `if __name__ == "__main__":`
    since trials run in worker processes, which import the calling script."""
    import argparse

    from rltune.tune import cli
    from rltune.tune.study import StudyDriver, prepare

    args = argparse.Namespace(spec=str(spec) if spec else None, agent=agent, env=env, trials=trials,
                              parallel=parallel, budget_steps=budget_steps, sampler=sampler,
                              scheduler=scheduler, seed=seed, executor=executor, storage=storage,
                              out=str(out) if out else None, resume=resume, eval_episodes=eval_episodes,
                              population_size=population_size, trainer=[])
    from rltune.errors import UsageError

    if eval_episodes < 0:
        raise UsageError("eval_episodes", "must be >= 0")
    study = prepare(cli.load(args))
    study_dir = Path(out or f"studies/{study.name}")
    driver = StudyDriver(study, study_dir, storage=storage, resume=resume, live=False,
                         eval_episodes=eval_episodes, population_size=population_size)
    return driver.run()
