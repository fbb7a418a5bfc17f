"""Deep Q-Network (Mnih et al. 2015) with the Double DQN option (van Hasselt et al. 2016).

Replay buffer, a target network copied every `update_target` env steps, a linear epsilon-greedy
schedule, an MLP or the Nature CNN (Atari). The TD loss is squared error, or Huber for Atari
(clipped rewards, as in the Nature paper). Huber (delta 1) on unclipped returns of ~100 made Q
diverge on CartPole-v1 (past 10^6 where 100 is the largest return; an independent minimal DQN
did the same, squared error did not): almost every TD error sits in Huber's linear regime, so
the rare large errors that carry the episode ends pull no harder than the many small ones.
tests/test_offpolicy.py keeps a probe with known values for it. Runs compiled on gymnax envs and in a
host loop on Gymnasium envs (see rltune/agents/_offpolicy.py); the math below serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import optax

from rltune.agents import _offpolicy as off
from rltune.config import param
from rltune.envs import EnvInfo
from rltune.envs.gym_vec import is_atari
from rltune.errors import UsageError
from rltune.networks import QNetwork


@dataclass(frozen=True)
class DQNConfig(off.OffPolicyConfig):
    learning_rate: float = param(2.5e-4, "Adam learning rate.", low=0.0, low_exclusive=True)
    buffer_size: int = param(100_000, "Replay buffer capacity (transitions).", low=1, static=True)
    batch_size: int = param(128, "Transitions per gradient step.", low=1, static=True)
    learning_starts: int = param(10_000, "Transitions in the buffer before learning starts.", low=0,
                                 static=True)
    train_freq: int = param(10, "Vector env steps between training phases.", low=1, static=True)
    update_target: int = param(1000, "Env steps between copies of the online network to the target "
                               "(traced: a population can differ in it).", low=1)
    double_dqn: bool = param(False, "Double DQN: the online network picks the next action, the "
                             "target network values it.", static=True)
    start_e: float = param(1.0, "Initial exploration epsilon.", low=0.0, high=1.0)
    end_e: float = param(0.05, "Final exploration epsilon.", low=0.0, high=1.0)
    exploration_fraction: float = param(0.5, "Fraction of total_steps over which epsilon decays "
                                        "linearly.", low=0.0, high=1.0, low_exclusive=True)
    loss: str = param("auto", "TD loss: auto (Huber for Atari, else squared error), mse, huber. Huber "
                      "diverges on unclipped returns much larger than 1 (see the module docstring).",
                      choices=("auto", "mse", "huber"), static=True)
    max_grad_norm: float = param(10.0, "Gradient clipping by global norm.", low=0.0, low_exclusive=True)
    network: str = param("auto", "Q-network: auto (Nature CNN for Atari, else MLP), mlp, nature_cnn.",
                         choices=("auto", "mlp", "nature_cnn"), static=True)
    hidden_size: int = param(64, "Units per hidden layer (MLP).", low=1, static=True)
    hidden_layers: int = param(2, "Hidden layers (MLP).", low=1, static=True)
    activation: str = param("relu", "Hidden activation (MLP).", choices=("tanh", "relu"), static=True)

    def check(self) -> None:
        if self.end_e > self.start_e:
            raise UsageError("end_e", f"must be <= start_e ({self.start_e}); got {self.end_e}")


Config = DQNConfig


def make_network(config: DQNConfig, info: EnvInfo) -> QNetwork:
    if not info.discrete:
        raise UsageError("env", f"DQN needs discrete actions; {info.env_id} has continuous ones "
                         "(use ddpg, td3 or c2a2)")
    cnn = config.network == "nature_cnn" or (config.network == "auto" and is_atari(info.env_id))
    return QNetwork(hidden=(config.hidden_size,) * config.hidden_layers, num_actions=info.num_actions,
                    activation=config.activation, cnn=cnn, obs_ndim=len(info.obs_shape))


def _optimizer(hp) -> optax.GradientTransformation:
    # The learning rate is applied by hand (off.apply_lr) so it stays a traced value.
    return optax.chain(optax.clip_by_global_norm(hp["max_grad_norm"]), optax.scale_by_adam())


def epsilon(config: DQNConfig, hp, env_steps):
    """Linear decay from start_e to end_e over exploration_fraction * total_steps env steps."""
    frac = env_steps.astype(jnp.float32) / (hp["exploration_fraction"] * config.total_steps)
    return hp["start_e"] + jnp.minimum(frac, 1.0) * (hp["end_e"] - hp["start_e"])


# ---------------------------------------------------------------- loss
def uses_huber(config: DQNConfig, info: EnvInfo) -> bool:
    return config.loss == "huber" or (config.loss == "auto" and is_atari(info.env_id))


def td_loss(network, hp, double: bool, huber: bool, params, target_params, batch):
    """Squared error (or Huber) between Q(s, a) and r + gamma * (1 - terminated) * Q_target(s', a*)."""
    q = network.apply(params, batch["obs"])
    q_taken = jnp.take_along_axis(q, batch["action"][:, None].astype(jnp.int32), -1)[:, 0]
    q_next = network.apply(target_params, batch["next_obs"])
    if double:
        best = jnp.argmax(network.apply(params, batch["next_obs"]), -1)
        next_value = jnp.take_along_axis(q_next, best[:, None], -1)[:, 0]
    else:
        next_value = q_next.max(-1)
    target = batch["reward"] + hp["gamma"] * (1.0 - batch["terminated"]) * next_value
    target = jax.lax.stop_gradient(target)
    loss = (optax.huber_loss(q_taken, target) if huber else 0.5 * (q_taken - target) ** 2).mean()
    return loss, {"loss": loss, "q_value": q_taken.mean()}


# ---------------------------------------------------------------- the algorithm for the loop
def make_algo(config: DQNConfig, info: EnvInfo) -> off.Algo:
    network = make_network(config, info)
    huber = uses_huber(config, info)

    def init_learner(rng, hp):
        params = network.init(rng, jnp.zeros((1, *info.obs_shape), jnp.float32))
        return off.Learner(params, params, _optimizer(hp).init(params), jnp.zeros((), jnp.int32))

    def explore(hp, params, obs, rng, env_steps, noise):
        k_coin, k_random = jax.random.split(rng)
        greedy = jnp.argmax(network.apply(params, obs), -1).astype(jnp.int32)
        random = jax.random.randint(k_random, greedy.shape, 0, info.num_actions)
        coin = jax.random.uniform(k_coin, greedy.shape) < epsilon(config, hp, env_steps)
        return jnp.where(coin, random, greedy), noise  # epsilon-greedy keeps no noise state

    def update(hp, learner: off.Learner, batch, rng):
        grads, metrics = jax.grad(partial(td_loss, network, hp, config.double_dqn, huber), has_aux=True)(
            learner.params, learner.target_params, batch)
        updates, opt_state = _optimizer(hp).update(grads, learner.opt_state, learner.params)
        params = off.apply_lr(learner.params, updates, hp["learning_rate"])
        return learner._replace(params=params, opt_state=opt_state, grad_steps=learner.grad_steps + 1), metrics

    return off.Algo(init_learner, explore, update, ("loss", "q_value"), (), jnp.int32,
                    target_every=lambda hp: jnp.round(hp["update_target"]).astype(jnp.int32))


# ---------------------------------------------------------------- agent interface
split_config = off.split_config


def init(config: DQNConfig, rng=None) -> off.OffPolicyState:
    return off.init(make_algo, config, rng)


def train_segment(config: DQNConfig, state: off.OffPolicyState, num_updates: int):
    """`num_updates` vector env steps; metrics: loss, q_value (0 before learning starts),
    episode_return / episode_length (last-100 window), episodes."""
    return off.train_segment(make_algo, config, state, num_updates)


def policy_fn(config: DQNConfig, info: EnvInfo):
    """Jitted `act(params, obs, rng, deterministic)`: greedy, or epsilon-greedy with end_e."""
    info = off.agent_info(config)
    network = make_network(config, info)
    _, hp = off.split_config(config)

    @partial(jax.jit, static_argnums=(3,))
    def act(params, obs, rng, deterministic: bool):
        q = network.apply(params, obs)
        greedy = jnp.argmax(q, -1)
        if deterministic:
            return greedy
        k_coin, k_random = jax.random.split(rng)
        random = jax.random.randint(k_random, greedy.shape, 0, info.num_actions)
        return jnp.where(jax.random.uniform(k_coin, greedy.shape) < hp["end_e"], random, greedy)

    return act
