"""Proximal Policy Optimization (clipped surrogate, GAE), discrete or Gaussian policies.

The math (GAE targets, epochs of minibatch SGD on the clipped loss) is an `Algo` for the shared
on-policy loop (rltune/agents/_onpolicy.py), which compiles whole segments on gymnax envs, runs
a host loop on Gymnasium envs and vmaps populations. Traced hyperparameters (learning rate,
gamma, ...) are arrays, so trials that differ only in them share one compiled program.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rltune import hp_schedule, shuffle
from rltune.agents import _onpolicy as on
from rltune.config import param
from rltune.envs import EnvInfo, env_info  # noqa: F401  (env_info: part of the module's API)
from rltune.errors import UsageError
from rltune.networks import ActorCritic


@dataclass(frozen=True)
class PPOConfig(on.OnPolicyConfig):
    learning_rate: float = param(2.5e-4, "Adam learning rate.", low=0.0, low_exclusive=True)
    anneal_lr: bool = param(True, "Decay the learning rate linearly to 0 over total_steps.", static=True)
    num_steps: int = param(128, "Rollout length per environment per update.", low=1, static=True)
    num_minibatches: int = param(4, "Minibatches per epoch.", low=1, static=True)
    update_epochs: int = param(4, "Epochs of SGD per update.", low=1, static=True)
    gamma: float = param(0.99, "Discount factor.", low=0.0, high=1.0)
    gae_lambda: float = param(0.95, "GAE lambda.", low=0.0, high=1.0)
    clip_eps: float = param(0.2, "PPO clip range for the ratio (and the value function).", low=0.0)
    ent_coef: float = param(0.01, "Entropy bonus coefficient.", low=0.0)
    vf_coef: float = param(0.5, "Value loss coefficient.", low=0.0)
    max_grad_norm: float = param(0.5, "Gradient clipping by global norm.", low=0.0, low_exclusive=True)
    hidden_size: int = param(64, "Units per hidden layer (actor and critic).", low=1, static=True)
    hidden_layers: int = param(2, "Hidden layers (actor and critic).", low=1, static=True)
    activation: str = param("tanh", "Hidden activation.", choices=("tanh", "relu"), static=True)
    normalize_obs: bool = param(False, "Normalize observations by a running mean and std, updated "
                                "after every rollout and saved with the parameters (evaluation and "
                                "load_agent apply it). For MuJoCo.", static=True)
    reward_scale: float = param(1.0, "Rewards are multiplied by this in the update (the reported "
                                "returns are not): keeps values near 1 when rewards are large.",
                                low=0.0, low_exclusive=True)
    hp_schedule: str = param("", "Traced hyperparameters changing during training, applied by the runner "
                             "(a PBT study's best_config.yaml holds one): JSON list of [step, {name: value}]; "
                             "see rltune/hp_schedule.py.", static=True)

    @property
    def rollout_length(self) -> int:
        return self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    def check(self) -> None:
        hp_schedule.check(self)
        if self.batch_size % self.num_minibatches:
            raise UsageError("num_minibatches", f"must divide num_envs * num_steps = {self.batch_size}; "
                             f"got {self.num_minibatches}")


Config = PPOConfig
PPOState = on.OnPolicyState
split_config = on.split_config
METRIC_NAMES = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


def make_network(config: PPOConfig, info: EnvInfo) -> ActorCritic:
    return ActorCritic(hidden=(config.hidden_size,) * config.hidden_layers,
                       action_dim=info.num_actions, discrete=info.discrete,
                       activation=config.activation, obs_ndim=len(info.obs_shape),
                       normalize_obs=config.normalize_obs)


def _optimizer(hp) -> optax.GradientTransformation:
    # The learning rate is applied by hand (on.apply_lr) so it can be a traced value.
    return optax.chain(optax.clip_by_global_norm(hp["max_grad_norm"]), optax.scale_by_adam(eps=1e-5))


# ---------------------------------------------------------------- loss
def _loss(params, network, info, hp, batch):
    traj, adv, targets = batch
    net_out, value = network.apply(params, traj.obs)
    log_prob, entropy = on.distribution_terms(net_out, info, traj.action)

    v_clipped = traj.value + jnp.clip(value - traj.value, -hp["clip_eps"], hp["clip_eps"])
    v_loss = 0.5 * jnp.maximum((value - targets) ** 2, (v_clipped - targets) ** 2).mean()

    log_ratio = log_prob - traj.log_prob
    ratio = jnp.exp(log_ratio)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - hp["clip_eps"], 1 + hp["clip_eps"]) * adv).mean()
    ent = entropy.mean()
    total = pg_loss + hp["vf_coef"] * v_loss - hp["ent_coef"] * ent
    approx_kl = ((ratio - 1) - log_ratio).mean()
    clip_frac = (jnp.abs(ratio - 1) > hp["clip_eps"]).mean()
    return total, {"loss": total, "policy_loss": pg_loss, "value_loss": v_loss, "entropy": ent,
                   "approx_kl": approx_kl, "clip_fraction": clip_frac}


def learning_rate_at(config: PPOConfig, update: int) -> float:
    """The learning rate at `update` (logged by the runner)."""
    if not config.anneal_lr:
        return float(config.learning_rate)
    # numpy float32, the compiled schedule's arithmetic: no JAX dispatch (and no compile) per log line
    frac = np.float32(1.0) - np.float32(update) / np.float32(config.num_updates)
    return float(np.float32(config.learning_rate) * np.maximum(frac, np.float32(0.0)))


# ---------------------------------------------------------------- update: GAE, then epochs of SGD
def _update(config: PPOConfig, info: EnvInfo, network, hp, params, opt_state, traj, last_obs, rng, update):
    traj = traj._replace(reward=traj.reward * hp["reward_scale"])
    adv, targets = on.advantages(network, params, traj, last_obs, hp["gamma"], hp["gae_lambda"])
    tx = _optimizer(hp)
    lr = on.linear_decay(hp["learning_rate"], update, config.num_updates) if config.anneal_lr \
        else hp["learning_rate"]
    flat = jax.tree.map(lambda x: x.reshape((config.batch_size, *x.shape[2:])), (traj, adv, targets))

    def minibatch_step(carry, batch):
        params, opt_state = carry
        grads, metrics = jax.grad(_loss, has_aux=True)(params, network, info, hp, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (on.apply_lr(params, updates, lr), opt_state), metrics

    def epoch(carry, key):
        perm = shuffle.permutation(key, config.batch_size)  # jax.random.permutation's, faster on CPU
        shuffled = jax.tree.map(
            lambda x: x[perm].reshape((config.num_minibatches, config.minibatch_size, *x.shape[1:])), flat)
        return jax.lax.scan(minibatch_step, carry, shuffled)

    (params, opt_state), metrics = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(rng, config.update_epochs))
    return params, opt_state, jax.tree.map(jnp.mean, metrics)


def make_algo(config: PPOConfig, info: EnvInfo) -> on.Algo:
    network = make_network(config, info)
    return on.Algo(network=network, optimizer=_optimizer,
                   update=functools.partial(_update, config, info, network), metric_names=METRIC_NAMES)


# ---------------------------------------------------------------- the agent contract (see _api.py)
def init(config: PPOConfig, rng=None) -> PPOState:
    return on.init(make_algo, config, rng)


def train_segment(config: PPOConfig, state: PPOState, num_updates: int):
    """Run `num_updates` updates (rollout + GAE + SGD epochs each). Returns the new state and the
    segment's mean metrics plus the reward-window moving averages (`episode_return`, ...)."""
    return on.train_segment(make_algo, config, state, num_updates)


def population_segment(static: PPOConfig, info: EnvInfo):
    return on.population_segment(make_algo, static, info)


def policy_fn(config: PPOConfig, info: EnvInfo):
    """A jitted `act(params, obs, rng, deterministic) -> action` for evaluation and load_agent."""
    return on.policy_fn(make_algo, config, info)
