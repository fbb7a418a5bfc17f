import argparse
import json

import pytest

from rltune.agents.ppo import PPOConfig
from rltune.cli import build_parser, main
from rltune.config import add_config_flags, config_from_args, dump_yaml, from_dict, load_yaml, traced_fields
from rltune.errors import UsageError


def test_every_field_is_a_flag_with_help():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, PPOConfig)
    help_text = parser.format_help()
    for name in PPOConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text


def test_common_flags_have_the_same_names():
    args = build_parser().parse_args(["train", "ppo", "--env", "Acrobot-v1", "--seed", "3", "--total-steps",
                                      "1000", "--num-envs", "2", "--out", "x"])
    config = config_from_args(PPOConfig, args)
    assert (config.env, config.seed, config.total_steps, config.num_envs) == ("Acrobot-v1", 3, 1000, 2)


@pytest.mark.parametrize("argv, field", [
    (["--learning-rate", "abc"], "--learning-rate"),
    (["--no-such-flag", "1"], "--no-such-flag"),
    (["--gamma", "1.5"], "gamma"),
    (["--learning-rate", "0"], "learning_rate"),
    (["--num-minibatches", "3"], "num_minibatches"),
    (["--activation", "gelu"], "--activation"),
])
def test_bad_flags_exit_2_naming_the_field(argv, field, capsys, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "ppo", "--out", str(out), *argv])
    assert exc.value.code == 2
    assert field in capsys.readouterr().err
    assert not out.exists()  # nothing half-written


def test_unknown_env_is_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "ppo", "--env", "NoSuchEnv-v9", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "env" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_yaml_round_trip_and_flags_override(tmp_path):
    config = from_dict(PPOConfig, {"learning_rate": 1e-3, "num_envs": 8, "anneal_lr": False})
    path = tmp_path / "c.yaml"
    dump_yaml(config, path)
    assert from_dict(PPOConfig, load_yaml(path)) == config
    args = build_parser().parse_args(["train", "ppo", "--config", str(path), "--num-envs", "2"])
    merged = config_from_args(PPOConfig, args, load_yaml(path))
    assert merged.num_envs == 2 and merged.learning_rate == 1e-3 and merged.anneal_lr is False


def test_unknown_field_in_yaml_names_it():
    with pytest.raises(UsageError) as exc:
        from_dict(PPOConfig, {"learning_rat": 0.1})
    assert exc.value.field == "learning_rat"


def test_traced_and_static_fields():
    traced = set(traced_fields(PPOConfig))
    assert {"learning_rate", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm",
            "reward_scale"} == traced


def test_compilation_cache_is_written_and_can_be_turned_off(tmp_path):
    import os
    import subprocess
    import sys

    def train(cache, *flags):
        env = {**os.environ, "RLTUNE_COMPILE_CACHE_DIR": str(cache)}
        env.pop("RLTUNE_COMPILE_CACHE", None)
        out = tmp_path / f"run-{cache.name}-{len(flags)}"
        proc = subprocess.run([sys.executable, "-m", "rltune", "train", "ppo", "--env", "CartPole-v1",
                               "--total-steps", "512", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "8",
                               "--eval-episodes", "0", "--out", str(out), *flags],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads((out / "summary.json").read_text())

    on, off = tmp_path / "on", tmp_path / "off"
    first = train(on)
    assert any(on.iterdir())  # compiled programs were stored
    assert train(off, "--no-compile-cache")["reward"] == first["reward"]  # the same program, compiled
    assert not off.exists() or not any(off.iterdir())  # and nothing stored

    from rltune import compile_cache

    os.environ["RLTUNE_COMPILE_CACHE"], os.environ["RLTUNE_COMPILE_CACHE_DIR"] = "0", str(off)
    try:
        assert not compile_cache.enabled_by_environment()
        assert compile_cache.cache_dir() == off
    finally:
        del os.environ["RLTUNE_COMPILE_CACHE"], os.environ["RLTUNE_COMPILE_CACHE_DIR"]


def test_split_traced_reuses_the_last_split_of_the_same_config_object_only():
    import dataclasses

    import jax
    import numpy as np

    from rltune.agents import ppo

    config = ppo.PPOConfig(env="CartPole-v1", ent_coef=0.0)
    static, hp = ppo.split_config(config)
    hp["learning_rate"] = None  # the caller's dict is its own
    again_static, again = ppo.split_config(config)
    assert again_static is static and again["learning_rate"] is not None
    # an equal config with other bits (-0.0 == 0.0) gets its own arrays
    negative = dataclasses.replace(config, ent_coef=-0.0)
    assert negative == config and np.signbit(np.asarray(ppo.split_config(negative)[1]["ent_coef"]))
    # a split inside a trace (abstract values) is not kept for later calls
    inside = dataclasses.replace(config, ent_coef=0.01)
    jax.eval_shape(lambda: ppo.split_config(inside)[1]["ent_coef"] * 2)
    assert all(not isinstance(v, jax.core.Tracer) for v in ppo.split_config(inside)[1].values())
