"""Every registered agent meets the written contract (rltune/agents/_api.py)."""

import pytest

from rltune.agents import AGENTS, _api
from rltune.config import from_dict
from rltune.errors import UsageError


def _config(module):
    """A small config on a gymnax env the agent supports (discrete first, else continuous)."""
    for env in ("CartPole-v1", "Pendulum-v1"):
        config = from_dict(module.Config, {"env": env, "total_steps": 4096, "reward_window": 7})
        try:
            from rltune.envs import env_info

            module.policy_fn(config, env_info(env))  # builds the network: rejects unsupported spaces
            return config
        except UsageError:
            continue
    raise AssertionError("agent supports neither CartPole-v1 nor Pendulum-v1")


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_agent_meets_the_contract(name):
    module = AGENTS[name]
    assert _api.contract_problems(name, module) == []
    assert _api.trace_problems(name, module, _config(module)) == []


def test_the_check_finds_a_missing_function_and_a_bad_config():
    import types

    broken = types.ModuleType("broken")
    broken.Config = dict
    broken.init = lambda config: None
    problems = _api.contract_problems("broken", broken)
    assert "broken: Config must be a dataclass" in problems
    assert "broken: init must take 2 positional arguments" in problems
    assert "broken: missing train_segment()" in problems


def test_the_trace_check_finds_a_missing_metric_and_a_wrong_window():
    import types

    from rltune.agents import _onpolicy, pg

    def train_segment(config, state, n):
        state, metrics = pg.train_segment(config, state, n)
        return state, {k: v for k, v in metrics.items() if k != "loss"}

    def init(config, rng=None):  # ignores reward_window
        import dataclasses

        return _onpolicy.init(pg.make_algo, dataclasses.replace(config, reward_window=100), rng)

    broken = types.ModuleType("broken")
    for attr in ("Config", "split_config", "policy_fn"):
        setattr(broken, attr, getattr(pg, attr))
    broken.init, broken.train_segment = init, train_segment
    config = from_dict(pg.Config, {"total_steps": 8000, "reward_window": 7})
    problems = _api.trace_problems("broken", broken, config)
    assert "broken: train_segment's metrics lack 'loss'" in problems
    assert any("episode window" in p for p in problems)
