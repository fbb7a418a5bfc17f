"""Twin Delayed DDPG (Fujimoto et al. 2018).

Twin critics (the minimum of the two for the target), delayed actor and target updates, target
policy smoothing. The math lives in rltune/agents/_actor_critic.py (shared with DDPG and C2A2);
the loop, compiled on gymnax envs or on the host for Gymnasium envs, in _offpolicy.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from rltune.agents import _actor_critic as ac
from rltune.agents import _offpolicy as off
from rltune.config import param
from rltune.envs import EnvInfo


@dataclass(frozen=True)
class TD3Config(ac.ActorCriticConfig):
    policy_delay: int = param(2, "Critic gradient steps per actor (and target) update.", low=1, static=True)
    target_noise: float = param(0.2, "Std of the target policy smoothing noise (fraction of the "
                                "action half-range).", low=0.0)
    noise_clip: float = param(0.5, "Clip of the target smoothing noise (fraction of the action "
                              "half-range).", low=0.0)


Config = TD3Config
VARIANT = ac.Variant(twin=True, num_actors=1, smoothing=True)
split_config = off.split_config


def make_algo(config: TD3Config, info: EnvInfo) -> off.Algo:
    return ac.make_algo(config, info, VARIANT)


def init(config: TD3Config, rng=None) -> off.OffPolicyState:
    return off.init(make_algo, config, rng)


def train_segment(config: TD3Config, state: off.OffPolicyState, num_updates: int):
    """`num_updates` vector env steps; metrics: loss (= critic_loss), actor_loss, q_value,
    episode_return / episode_length (last-100 window), episodes."""
    return off.train_segment(make_algo, config, state, num_updates)


def policy_fn(config: TD3Config, info: EnvInfo):
    return ac.policy_fn(config, VARIANT)
