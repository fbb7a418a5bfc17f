"""Presets (defaults < preset < --config < flags), flag spellings, the one-call Python API."""

import dataclasses

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
