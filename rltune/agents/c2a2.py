"""C2A2: TD3's value estimation (twin critics, delayed updates, target smoothing) with two actors.

At acting time both actors propose an action and the one with the larger estimated Q (the
minimum over the twin critics) is taken; the critic target picks between the two target
actors' proposals the same way. Each actor ascends Q1 on its own, from its own initialization.
The math is TD3's, in rltune/agents/_actor_critic.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from rltune.agents import _actor_critic as ac
from rltune.agents import _offpolicy as off
from rltune.agents.td3 import TD3Config
from rltune.envs import EnvInfo


@dataclass(frozen=True)
class C2A2Config(TD3Config):
    pass


Config = C2A2Config
VARIANT = ac.Variant(twin=True, num_actors=2, smoothing=True)
split_config = off.split_config


def make_algo(config: C2A2Config, info: EnvInfo) -> off.Algo:
    return ac.make_algo(config, info, VARIANT)


def init(config: C2A2Config, rng=None) -> off.OffPolicyState:
    return off.init(make_algo, config, rng)


def train_segment(config: C2A2Config, state: off.OffPolicyState, num_updates: int):
    """`num_updates` vector env steps; metrics: loss (= critic_loss), actor_loss (mean of both
    actors), q_value, episode_return / episode_length (last-100 window), episodes."""
    return off.train_segment(make_algo, config, state, num_updates)


def policy_fn(config: C2A2Config, info: EnvInfo):
    return ac.policy_fn(config, VARIANT)
