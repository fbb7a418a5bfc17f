"""REINFORCE (Williams 1992): the policy gradient with Monte-Carlo returns, optionally minus a
learned baseline V(s).

Every update collects `batch_size` env steps (`batch_size / num_envs` vector steps per env,
auto-reset) and takes one gradient step. A step's return is its discounted reward-to-go, so
only steps whose episode ends inside the rollout carry a known return and enter the loss; the
unfinished tail of each env's rollout is left out (that episode's later steps count in the next
rollout, where it ends). A truncated episode (time limit) bootstraps from the baseline's
V(final obs) when there is one, and otherwise ends there. Discrete or Gaussian policies
(state-independent log std). The loop is rltune/agents/_onpolicy.py.
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
from rltune.errors import UsageError
from rltune.networks import ActorCritic


@dataclass(frozen=True)
class PGConfig(on.OnPolicyConfig):
    learning_rate: float = param(5e-3, "Adam learning rate.", low=0.0, low_exclusive=True)
    anneal_lr: bool = param(False, "Decay the learning rate linearly to 0 over total_steps.", static=True)
    batch_size: int = param(4000, "Env steps per gradient update (all envs together); a multiple "
                            "of num_envs. Keep batch_size / num_envs above the episode length, or "
                            "few episodes end inside a rollout.", low=1, static=True)
    gamma: float = param(0.99, "Discount factor.", low=0.0, high=1.0)
    baseline: bool = param(True, "Subtract a learned state-value baseline from the returns.", static=True)
    vf_coef: float = param(0.5, "Baseline (value) loss coefficient.", low=0.0)
    ent_coef: float = param(0.0, "Entropy bonus coefficient.", low=0.0)
    normalize_advantages: bool = param(True, "Normalize the returns minus baseline per update "
                                       "(mean 0, std 1).", static=True)
    max_grad_norm: float = param(1.0, "Gradient clipping by global norm.", low=0.0, low_exclusive=True)
    max_updates: int = param(0, "Stop after this many gradient updates (0: no cap): training ends at "
                             "total_steps or max_updates, whichever comes first.", low=0, static=True)
    hidden_size: int = param(64, "Units per hidden layer (policy and baseline).", low=1, static=True)
    hidden_layers: int = param(2, "Hidden layers (policy and baseline).", low=1, static=True)
    activation: str = param("tanh", "Hidden activation.", choices=("tanh", "relu"), static=True)
    normalize_obs: bool = param(False, "Normalize observations by a running mean and std, updated "
                                "after every rollout and saved with the parameters (evaluation and "
                                "load_agent apply it). For MuJoCo.", static=True)

    @property
    def rollout_length(self) -> int:
        return self.batch_size // self.num_envs

    @property
    def num_updates(self) -> int:
        by_steps = max(1, self.total_steps // self.batch_size)
        return min(by_steps, self.max_updates) if self.max_updates else by_steps

    def check(self) -> None:
        if self.batch_size % self.num_envs:
            raise UsageError("batch_size", f"must be a multiple of num_envs = {self.num_envs}; "
                             f"got {self.batch_size}")


Config = PGConfig
split_config = on.split_config
METRIC_NAMES = ("loss", "policy_loss", "value_loss", "entropy", "complete_fraction")


def make_network(config: PGConfig, info: EnvInfo) -> ActorCritic:
    return ActorCritic(hidden=(config.hidden_size,) * config.hidden_layers, action_dim=info.num_actions,
                       discrete=info.discrete, activation=config.activation, obs_ndim=len(info.obs_shape),
                       critic=config.baseline, normalize_obs=config.normalize_obs)


def _optimizer(hp) -> optax.GradientTransformation:
    # The learning rate is applied by hand (on.apply_lr) so it stays a traced value.
    return optax.chain(optax.clip_by_global_norm(hp["max_grad_norm"]), optax.scale_by_adam())


# ---------------------------------------------------------------- returns and loss
def monte_carlo_returns(network, params, traj: on.Transition, gamma):
    """Discounted reward-to-go of every step and the mask of steps whose episode ends in the
    rollout. Without a baseline the network's value is 0, so truncation adds nothing."""
    _, final_values = network.apply(params, traj.final_obs)
    rewards = on.bootstrapped_rewards(traj, final_values, gamma)
    zeros = jnp.zeros_like(traj.reward)
    returns = on.gae(rewards, zeros, traj.done, zeros[0], gamma, 1.0)
    return returns, on.episode_ends_in_rollout(traj.done)


def _masked_mean(x, mask, n):
    return (x * mask).sum() / n


def _loss(params, network, info: EnvInfo, hp, normalize: bool, traj: on.Transition, returns, mask):
    net_out, value = network.apply(params, traj.obs)
    log_prob, entropy = on.distribution_terms(net_out, info, traj.action)
    n = jnp.maximum(mask.sum(), 1.0)
    adv = returns - jax.lax.stop_gradient(value)
    if normalize:
        mean = _masked_mean(adv, mask, n)
        std = jnp.sqrt(_masked_mean((adv - mean) ** 2, mask, n))
        adv = (adv - mean) / (std + 1e-8)
    policy_loss = -_masked_mean(log_prob * adv, mask, n)
    value_loss = 0.5 * _masked_mean((value - returns) ** 2, mask, n)
    ent = entropy.mean()
    total = policy_loss + hp["vf_coef"] * value_loss - hp["ent_coef"] * ent
    return total, {"loss": total, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": ent,
                   "complete_fraction": mask.mean()}


def _update(config: PGConfig, info: EnvInfo, network, hp, params, opt_state, traj, last_obs, rng, update):
    del last_obs, rng  # Monte-Carlo: nothing is bootstrapped from the rollout's end
    returns, mask = monte_carlo_returns(network, params, traj, hp["gamma"])
    grads, metrics = jax.grad(_loss, has_aux=True)(params, network, info, hp, config.normalize_advantages,
                                                   traj, returns, mask)
    updates, opt_state = _optimizer(hp).update(grads, opt_state, params)
    lr = on.linear_decay(hp["learning_rate"], update, config.num_updates) if config.anneal_lr \
        else hp["learning_rate"]
    return on.apply_lr(params, updates, lr), opt_state, metrics


def make_algo(config: PGConfig, info: EnvInfo) -> on.Algo:
    network = make_network(config, info)
    return on.Algo(network=network, optimizer=_optimizer,
                   update=functools.partial(_update, config, info, network), metric_names=METRIC_NAMES)


# ---------------------------------------------------------------- the agent contract (see _api.py)
def init(config: PGConfig, rng=None) -> on.OnPolicyState:
    return on.init(make_algo, config, rng)


def train_segment(config: PGConfig, state: on.OnPolicyState, num_updates: int):
    """Run `num_updates` gradient updates of `batch_size` env steps each."""
    return on.train_segment(make_algo, config, state, num_updates)


def population_segment(static: PGConfig, info: EnvInfo):
    return on.population_segment(make_algo, static, info)


def policy_fn(config: PGConfig, info: EnvInfo):
    return on.policy_fn(make_algo, config, info)
