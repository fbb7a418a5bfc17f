import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from rltune import checkpoint, load_agent
from rltune.agents import ppo
from rltune.config import from_dict
from rltune.errors import UsageError
from rltune.runner import RunOptions, train

TINY = {"num_envs": 4, "num_steps": 16, "num_minibatches": 2, "update_epochs": 2, "hidden_size": 16,
        "total_steps": 64 * 4}


def leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_load_round_trip(tmp_path):
    config = from_dict(ppo.PPOConfig, TINY)
    state, _ = ppo.train_segment(config, ppo.init(config), 1)
    path = tmp_path / "c.msgpack"
    checkpoint.save(path, agent="ppo", config=config.__dict__, state=state)
    restored = checkpoint.restore_state(ppo.init(config), checkpoint.read(path))
    leaves_equal(state, restored)  # params, optimizer, env state, rng, episode window: everything


def test_checkpoint_is_not_a_pickle(tmp_path):
    path = tmp_path / "evil.msgpack"
    path.write_bytes(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle payload
    with pytest.raises(UsageError):
        checkpoint.read(path)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    config = from_dict(ppo.PPOConfig, TINY)
    opts = RunOptions(segment_steps=64, eval_episodes=0)
    full = train("ppo", config, tmp_path / "full", options=opts)
    stopped = train("ppo", config, tmp_path / "part", options=opts,
                    report=lambda step, reward: "stop" if step >= 128 else "continue")
    assert stopped["status"] == "stopped" and stopped["env_steps"] == 128
    resumed = train("ppo", config, tmp_path / "part", options=opts, resume=True)
    assert resumed["env_steps"] == full["env_steps"] == 256
    a = checkpoint.read(tmp_path / "full" / "checkpoints" / "last.msgpack")["state"]
    b = checkpoint.read(tmp_path / "part" / "checkpoints" / "last.msgpack")["state"]
    leaves_equal(a, b)
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [64, 128, 192, 256]


def test_cli_train_eval_and_load_agent(tmp_path, capsys, monkeypatch):
    from rltune.cli import main

    # `python -m rltune` itself once (a fresh process); eval and a second train run in this
    # process through the same entry point (each subprocess cost a JAX import and a compile)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rltune", "train", "ppo", "--env", "CartPole-v1", "--total-steps", "10000",
           "--num-steps", "32", "--out", str(run), "--eval-episodes", "3"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "evaluation on CartPole-v1 (gymnasium)" in out.stdout
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.msgpack",
                 "checkpoints/best.msgpack"):
        assert (run / name).exists(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_steps"] >= 9_000
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["reward"] > rows[0]["reward"]  # it learns something in 10k steps

    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "5"]) == 0
    assert "5 episodes: mean" in capsys.readouterr().out

    agent = load_agent(run)
    single = agent.act(np.zeros(4, np.float32))
    batch = agent.act(np.zeros((7, 4), np.float32))
    assert np.ndim(single) == 0 and int(single) in (0, 1)
    assert batch.shape == (7,)
    # stochastic actions draw from the agent's key stream: split, act with the new key, keep the rest
    again = load_agent(run)
    rng, expected = again._rng, []
    for obs in np.linspace(-0.2, 0.2, 40, dtype=np.float32).reshape(10, 4):
        rng, key = jax.random.split(rng)
        expected.append(int(np.asarray(again._act(again.params, obs[None], key, False))[0]))
        assert int(again.act(obs, deterministic=False)) == expected[-1]
    assert np.array_equal(np.asarray(again._rng), np.asarray(rng))
    # it acts on the CPU (an accelerator's launches and copies cost more per observation)
    for leaf in jax.tree.leaves(agent.params) + [agent._rng]:
        assert leaf.committed and {d.platform for d in leaf.devices()} == {"cpu"}
    # where JAX_PLATFORMS leaves the CPU out: JAX's default device, the same actions
    from rltune import cpu_threads
    monkeypatch.setattr(cpu_threads, "cpu_platform_allowed", lambda: False)
    default = load_agent(run)
    assert not any(leaf.committed for leaf in jax.tree.leaves(default.params))
    assert np.array_equal(default.act(np.zeros((7, 4), np.float32)), batch)

    # trains again from its config.yaml, with an override (the seed: traced, so the program
    # compiled above is reused; a changed total_steps would compile another)
    again = tmp_path / "again"
    assert main(["train", "ppo", "--config", str(run / "config.yaml"), "--seed", "1",
                 "--out", str(again), "--eval-episodes", "0"]) == 0
    assert "seed: 1\n" in (again / "config.yaml").read_text()
    assert json.loads((again / "summary.json").read_text())["env_steps"] == summary["env_steps"]
