"""Presets (defaults < preset < --config < flags), flag spellings, the one-call Python API."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import rltune
from rltune.agents import AGENTS, dqn
from rltune.cli import build_parser, main
from rltune.presets import default_search_space, preset, presets, resolve_config
from rltune.tune import cli as tune_cli


def defaults(cls):
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_every_preset_is_a_valid_config_with_a_spec_beside_it():
    from importlib import resources

    specs = resources.files("rltune.presets") / "specs"
    for agent in AGENTS:
        for env, values in presets(agent).items():
            config = resolve_config(agent, {"env": env}).config
            assert all(getattr(config, k) == v for k, v in values.items())
            assert (specs / f"{agent}_{env.replace('/', '_')}.yaml").is_file(), (agent, env)


def test_override_order_preset_then_config_file_then_flags():
    values = preset("dqn", "CartPole-v1")
    assert values, "the dqn CartPole-v1 preset exists"
    base = defaults(dqn.Config)
    changed = [k for k, v in values.items() if v != base[k]]
    assert changed
    name = "learning_rate" if "learning_rate" in changed else changed[0]

    resolved = resolve_config("dqn", {"env": "CartPole-v1"})
    assert getattr(resolved.config, name) == values[name] and resolved.preset == "dqn/CartPole-v1"
    from_file = resolve_config("dqn", {}, {"env": "CartPole-v1", "learning_rate": 1.25e-3, "seed": 3})
    assert from_file.config.learning_rate == 1.25e-3 and from_file.config.seed == 3
    others = {k: v for k, v in values.items() if k != "learning_rate"}
    assert all(getattr(from_file.config, k) == v for k, v in others.items())  # the rest of the preset stays
    flags = resolve_config("dqn", {"learning_rate": 7e-4}, {"env": "CartPole-v1", "learning_rate": 1.25e-3})
    assert flags.config.learning_rate == 7e-4


def test_preset_none_gives_the_bare_defaults():
    resolved = resolve_config("dqn", {"env": "CartPole-v1"}, preset_mode="none")
    assert dataclasses.asdict(resolved.config) == {**defaults(dqn.Config), "env": "CartPole-v1"}
    assert resolved.preset is None and resolved.notes == ()


def test_unknown_env_falls_back_to_defaults_with_a_note():
    resolved = resolve_config("dqn", {"env": "Probe-Sign-v0"})
    assert dataclasses.asdict(resolved.config) == {**defaults(dqn.Config), "env": "Probe-Sign-v0"}
    assert resolved.preset is None
    assert "no preset for dqn on Probe-Sign-v0" in resolved.notes[0]


def test_cli_prints_the_resolved_config_and_writes_it(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "dqn", "--env-id", "CartPole-v1", "--total-timesteps", "300", "--learning-starts", "64",
                 "--batch-size", "16", "--buffer-size", "500", "--no-double-dqn", "--eval-episodes", "0",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "preset dqn/CartPole-v1" in text and "learning_starts: 64" in text
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["total_steps"] == 300 and written["double_dqn"] is False
    assert written["learning_rate"] == preset("dqn", "CartPole-v1").get("learning_rate", written["learning_rate"])


def test_flag_spellings_and_boolean_forms():
    parser = build_parser()
    a = parser.parse_args(["train", "dqn", "--env-id", "Acrobot-v1", "--total-timesteps", "5", "--double-dqn"])
    assert (a.env, a.total_steps, a.double_dqn) == ("Acrobot-v1", 5, True)
    assert parser.parse_args(["train", "dqn", "--no-double-dqn"]).double_dqn is False
    assert parser.parse_args(["train", "dqn", "--double-dqn", "false"]).double_dqn is False
    assert "double_dqn" not in vars(parser.parse_args(["train", "dqn"]))  # unset: the preset decides


def test_tune_agent_builds_a_spec_from_the_default_search_space(capsys):
    parser = build_parser()
    args = parser.parse_args(["tune", "--agent", "dqn", "--env", "CartPole-v1", "--trials", "3",
                              "--budget-steps", "1000", "--sampler", "random", "--scheduler", "asha"])
    args.trainer = []
    spec = tune_cli.load(args)
    assert (spec.agent, spec.env, spec.num_trials, spec.budget_steps) == ("dqn", "CartPole-v1", 3, 1000)
    assert spec.sampler.name == "random" and spec.scheduler.name == "asha" and spec.early_stopping
    assert set(spec.space.names) == set(default_search_space("dqn"))
    assert not set(spec.fixed) & set(spec.space.names)  # the preset fixes only what is not searched
    assert set(default_search_space("ppo")) >= {"learning_rate", "gamma"}


def test_one_call_api_trains_and_acts(tmp_path):
    run = rltune.train("ppo", env="CartPole-v1", total_steps=256, num_envs=2, num_steps=32,
                       hidden_size=8, eval_episodes=2, out=tmp_path / "api")
    assert run.directory == tmp_path / "api" and (run.directory / "config.yaml").is_file()
    assert run.summary["status"] == "completed" and run.summary["env_steps"] == 256
    assert run.summary["eval"]["episodes"] == 2 and run.config.num_envs == 2
    obs = np.zeros(4, np.float32)
    assert int(run.act(obs)) in (0, 1)
    assert run.act(np.zeros((3, 4), np.float32)).shape == (3,)


def test_one_call_api_rejects_a_bad_field_before_writing(tmp_path):
    with pytest.raises(rltune.UsageError, match="learning_rat"):
        rltune.train("ppo", env="CartPole-v1", learning_rat=1e-3, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_compiled_gymnax_eval_gives_the_known_returns():
    from rltune.evaluate import evaluate_compiled

    # Probe-Sign-v0: reward 1 when the action matches the observation's sign, one-step episodes;
    # Probe-Chain-v0: 50 steps of reward 1 whatever the actions.
    def policy(params, obs):
        return ((obs[:, 0] * params) > 0).astype(jnp.int32)

    assert evaluate_compiled(policy, jnp.float32(1.0), "Probe-Sign-v0", 16, seed=3).returns == (1.0,) * 16
    assert evaluate_compiled(policy, jnp.float32(-1.0), "Probe-Sign-v0", 16, seed=3).returns == (0.0,) * 16
    assert evaluate_compiled(policy, jnp.float32(1.0), "Probe-Chain-v0", 4, seed=3).returns == (50.0,) * 4


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_periodic_evaluation_picks_the_best_checkpoint_and_the_final_eval_uses_it(tmp_path):
    from rltune.evaluate import evaluate
    from rltune.policy import load_agent

    run = rltune.train("dqn", env="Probe-Sign-v0", total_steps=2000, num_envs=4, learning_starts=200,
                       buffer_size=2000, batch_size=32, hidden_size=8, learning_rate=3e-3, update_target=100,
                       eval_every=500, eval_every_episodes=8, eval_episodes=20, preset="none",
                       out=tmp_path / "run")
    evals = {row["step"]: row["periodic_eval"] for row in _jsonl(run.directory / "metrics.jsonl")
             if "periodic_eval" in row}
    assert sorted(evals) == [500, 1000, 1500, 2000]  # every 500 steps; the last one is the end
    best = max(evals.values())
    chosen = max(step for step, value in evals.items() if value == best)  # ties: the later policy
    agent = load_agent(run.directory, "best")
    assert agent.env_steps == chosen
    assert run.summary["best_by"] == "eval" and run.summary["best_eval"] == best
    # The final evaluation is the best checkpoint's (what `rltune eval RUN` gives).
    again = evaluate(lambda obs: agent._act(agent.params, obs, jax.random.PRNGKey(10_000), True),
                     "Probe-Sign-v0", "gymnax", 20, 10_000)
    assert run.summary["eval"]["checkpoint"] == "best" and run.summary["eval"]["mean"] == again.mean


def test_without_periodic_evaluation_the_best_checkpoint_follows_the_training_reward(tmp_path):
    run = rltune.train("dqn", env="Probe-Sign-v0", total_steps=1000, num_envs=4, learning_starts=200,
                       buffer_size=1000, batch_size=32, hidden_size=8, eval_every=0, eval_episodes=0,
                       preset="none", out=tmp_path / "run")
    rows = _jsonl(run.directory / "metrics.jsonl")
    assert not any("periodic_eval" in row for row in rows)
    assert run.summary["best_by"] == "reward" and "best_eval" not in run.summary
    from rltune.policy import load_agent

    best_step = max(rows, key=lambda row: (row["reward"], -row["step"]))["step"]  # first at the max
    assert load_agent(run.directory, "best").env_steps == best_step


def test_periodic_evaluation_flags_are_checked_before_anything_is_written(tmp_path):
    for flags, name in ((["--eval-every", "-5"], "--eval-every"), (["--eval-every-episodes", "0"],
                                                                   "--eval-every-episodes")):
        with pytest.raises(SystemExit) as exc:
            main(["train", "dqn", "--env", "CartPole-v1", "--out", str(tmp_path / "x"), *flags])
        assert exc.value.code == 2
    assert not (tmp_path / "x").exists()
