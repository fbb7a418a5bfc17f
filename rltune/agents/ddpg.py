"""Deep Deterministic Policy Gradient (Lillicrap et al. 2016).

An actor and a critic, target networks with soft (Polyak) updates, Gaussian exploration noise.
The math lives in rltune/agents/_actor_critic.py (shared with TD3 and C2A2); the loop, compiled
on gymnax envs or on the host for Gymnasium envs, in rltune/agents/_offpolicy.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from rltune.agents import _actor_critic as ac
from rltune.agents import _offpolicy as off
from rltune.envs import EnvInfo


@dataclass(frozen=True)
class DDPGConfig(ac.ActorCriticConfig):
    pass


Config = DDPGConfig
VARIANT = ac.Variant(twin=False, num_actors=1, smoothing=False)
split_config = off.split_config


def make_algo(config: DDPGConfig, info: EnvInfo) -> off.Algo:
    return ac.make_algo(config, info, VARIANT)


def init(config: DDPGConfig, rng=None) -> off.OffPolicyState:
    return off.init(make_algo, config, rng)


def train_segment(config: DDPGConfig, state: off.OffPolicyState, num_updates: int):
    """`num_updates` vector env steps; metrics: loss (= critic_loss), actor_loss, q_value,
    episode_return / episode_length (last-100 window), episodes."""
    return off.train_segment(make_algo, config, state, num_updates)


def policy_fn(config: DDPGConfig, info: EnvInfo):
    return ac.policy_fn(config, VARIANT)
