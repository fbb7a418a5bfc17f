"""Advantage actor-critic, synchronous (A2C; Mnih et al. 2016's A3C without the asynchrony).

Every update: `t_max` vector steps on `num_envs` envs, n-step returns (GAE with lambda = 1 by
default) bootstrapped from V at the rollout's end and at truncations, then one gradient step on
policy loss + value loss - entropy bonus with RMSprop (A3C's choice) or Adam. The actor and
critic share a torso or not (`shared_torso`); policies are categorical or Gaussian with a
state-independent log std. The loop (compiled on gymnax, host loop on Gymnasium, vmapped
populations) is rltune/agents/_onpolicy.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from rltune.agents import _onpolicy as on
from rltune.config import param
from rltune.envs import EnvInfo
from rltune.networks import ActorCritic


@dataclass(frozen=True)
class A2CConfig(on.OnPolicyConfig):
    num_envs: int = param(8, "Parallel environments (vectorized, auto-reset).", low=1, static=True)
    learning_rate: float = param(7e-4, "Learning rate.", low=0.0, low_exclusive=True)
    anneal_lr: bool = param(True, "Decay the learning rate linearly to 0 over total_steps.", static=True)
    t_max: int = param(5, "Vector env steps per update (the n of the n-step returns).", low=1, static=True)
    gamma: float = param(0.99, "Discount factor.", low=0.0, high=1.0)
    gae_lambda: float = param(1.0, "GAE lambda; 1 gives A3C's n-step returns.", low=0.0, high=1.0)
    ent_coef: float = param(0.01, "Entropy bonus coefficient.", low=0.0)
    vf_coef: float = param(0.5, "Value loss coefficient.", low=0.0)
    reward_scale: float = param(1.0, "Rewards are multiplied by this in the update (the reported "
                                "returns are not): keeps values near 1 when rewards are large.",
                                low=0.0, low_exclusive=True)
    max_grad_norm: float = param(0.5, "Gradient clipping by global norm.", low=0.0, low_exclusive=True)
    optimizer: str = param("rmsprop", "Optimizer.", choices=("rmsprop", "adam"), static=True)
    rms_decay: float = param(0.99, "RMSprop decay of the squared-gradient average.", low=0.0, high=1.0)
    optimizer_eps: float = param(1e-5, "Optimizer epsilon (RMSprop and Adam).", low=0.0, low_exclusive=True)
    normalize_advantages: bool = param(False, "Normalize advantages per update (mean 0, std 1).", static=True)
    shared_torso: bool = param(False, "One hidden stack for actor and critic (A3C's network) instead "
                               "of two.", static=True)
    hidden_size: int = param(64, "Units per hidden layer.", low=1, static=True)
    hidden_layers: int = param(2, "Hidden layers.", low=1, static=True)
    activation: str = param("tanh", "Hidden activation.", choices=("tanh", "relu"), static=True)
    normalize_obs: bool = param(False, "Normalize observations by a running mean and std, updated "
                                "after every rollout and saved with the parameters (evaluation and "
                                "load_agent apply it). For MuJoCo.", static=True)
    bounded_mean: bool = param(False, "Gaussian policies: squash the mean into the action bounds "
                               "(tanh), so it cannot run past them where clipped actions stop "
                               "telling it apart.", static=True)

    @property
    def rollout_length(self) -> int:
        return self.t_max


Config = A2CConfig
split_config = on.split_config
METRIC_NAMES = ("loss", "policy_loss", "value_loss", "entropy")


def make_network(config: A2CConfig, info: EnvInfo) -> ActorCritic:
    return ActorCritic(hidden=(config.hidden_size,) * config.hidden_layers, action_dim=info.num_actions,
                       discrete=info.discrete, activation=config.activation, obs_ndim=len(info.obs_shape),
                       shared_torso=config.shared_torso, normalize_obs=config.normalize_obs,
                       mean_bounds=((info.action_low, info.action_high)
                                    if config.bounded_mean and not info.discrete else None))


def _optimizer(config: A2CConfig, hp) -> optax.GradientTransformation:
    # The learning rate is applied by hand (on.apply_lr) so it stays a traced value.
    scale = (optax.scale_by_rms(decay=hp["rms_decay"], eps=hp["optimizer_eps"]) if config.optimizer == "rmsprop"
             else optax.scale_by_adam(eps=hp["optimizer_eps"]))
    return optax.chain(optax.clip_by_global_norm(hp["max_grad_norm"]), scale)


# ---------------------------------------------------------------- loss
def _loss(params, network, info: EnvInfo, hp, normalize: bool, traj: on.Transition, adv, targets, weights):
    """`weights`: per-step importance weights of the policy gradient (1.0: on-policy; a3c's
    V-trace passes its truncated ratios), applied after normalizing the advantages."""
    net_out, value = network.apply(params, traj.obs)
    log_prob, entropy = on.distribution_terms(net_out, info, traj.action)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy_loss = -(weights * log_prob * adv).mean()
    value_loss = 0.5 * ((value - targets) ** 2).mean()
    ent = entropy.mean()
    total = policy_loss + hp["vf_coef"] * value_loss - hp["ent_coef"] * ent
    return total, {"loss": total, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": ent}


# ---------------------------------------------------------------- update: n-step returns, one step
def _update(config: A2CConfig, info: EnvInfo, network, hp, params, opt_state, traj, last_obs, rng, update):
    del rng  # the update is deterministic given the rollout
    traj = traj._replace(reward=traj.reward * hp["reward_scale"])
    adv, targets = on.advantages(network, params, traj, last_obs, hp["gamma"], hp["gae_lambda"])
    return gradient_step(config, info, network, hp, params, opt_state, traj, adv, targets, 1.0, update)


def gradient_step(config: A2CConfig, info: EnvInfo, network, hp, params, opt_state, traj, adv, targets, weights,
                  update):
    """One optimizer step on the loss for given advantages and value targets (a3c's learner
    reuses it with V-trace's)."""
    grads, metrics = jax.grad(_loss, has_aux=True)(params, network, info, hp, config.normalize_advantages,
                                                   traj, adv, targets, weights)
    updates, opt_state = _optimizer(config, hp).update(grads, opt_state, params)
    lr = on.linear_decay(hp["learning_rate"], update, config.num_updates) if config.anneal_lr \
        else hp["learning_rate"]
    return on.apply_lr(params, updates, lr), opt_state, jax.tree.map(jnp.asarray, metrics)


def make_algo(config: A2CConfig, info: EnvInfo) -> on.Algo:
    network = make_network(config, info)
    return on.Algo(network=network, optimizer=functools.partial(_optimizer, config),
                   update=functools.partial(_update, config, info, network), metric_names=METRIC_NAMES)


# ---------------------------------------------------------------- the agent contract (see _api.py)
def init(config: A2CConfig, rng=None) -> on.OnPolicyState:
    return on.init(make_algo, config, rng)


def train_segment(config: A2CConfig, state: on.OnPolicyState, num_updates: int):
    """Run `num_updates` updates of `num_envs * t_max` env steps each."""
    return on.train_segment(make_algo, config, state, num_updates)


def population_segment(static: A2CConfig, info: EnvInfo):
    return on.population_segment(make_algo, static, info)


def policy_fn(config: A2CConfig, info: EnvInfo):
    return on.policy_fn(make_algo, config, info)
