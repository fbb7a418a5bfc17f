"""Compiled MuJoCo (MJX, jit + vmap) against Gymnasium's host loop: Hopper env steps per second.

    python benchmarks/mjx_vs_host.py --mjx-python .venv-mjx/bin/python [--batch 1 8 64 256 1024]
                                     [--seconds 3]

MJX (`mujoco-mjx` 3.17.0, the newest) is released with `mujoco` 3.17 while rltune's venv has
`mujoco` 4, so the MJX side runs in a separate Python that has `mujoco-mjx` and `jax` (for example
`python -m venv .venv-mjx && .venv-mjx/bin/pip install mujoco-mjx==3.17.0 "mujoco<4"
jax==0.10.2`); this script starts it with `--worker` and reads one JSON line per batch size.
Without `--mjx-python` only the host side is measured.

Both sides simulate Gymnasium's Hopper-v5 (its own hopper.xml asset): one env step is 4 physics
steps (frame_skip 4) with a uniform random action in [-1, 1]^3, the observation and reward
computed, and an auto-reset where Hopper's health check fails (random actions fall within some
20-60 steps): Gymnasium resets the env; MJX puts it back to its own first state, as Brax's
auto-reset does, so no reset is simulated inside the batch. Truncation at 1000 steps is left
out (random episodes never reach it).

- host: `gymnasium.make("Hopper-v5")` stepped in a Python loop (N = 1), and rltune's host-loop
  vector env (`rltune.envs.gym_vec.VecEnv`, Gymnasium's SyncVectorEnv) with N envs;
- MJX: N envs as one batch, `jax.vmap` of the env step inside a `jax.jit`-compiled `lax.scan` of
  20 steps, called until `--seconds` have passed (compile excluded, reported apart).

Rates are given per wall second and per CPU second of the process (all its threads: XLA's CPU
runtime uses both cores). On shared cores the wall rates are lower bounds that move with the
load (printed next to the table); the per-CPU-second rates move much less and are the fairer
comparison there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

FRAME_SKIP = 4  # Gymnasium Hopper-v5
RESET_NOISE = 5e-3
SCAN = 20  # env steps per compiled call on the MJX side


def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


# ---------------------------------------------------------------- MJX side (runs in --mjx-python)
def mjx_worker(xml: str, batches: list[int], seconds: float) -> None:
    import jax
    import jax.numpy as jnp
    import mujoco
    from mujoco import mjx

    model = mujoco.MjModel.from_xml_path(xml)
    mx = mjx.put_model(model)
    init_qpos, init_qvel = jnp.asarray(model.qpos0), jnp.zeros(model.nv)
    data0 = mjx.make_data(mx)

    def reset(key):
        k1, k2 = jax.random.split(key)
        qpos = init_qpos + jax.random.uniform(k1, init_qpos.shape, minval=-RESET_NOISE, maxval=RESET_NOISE)
        qvel = init_qvel + jax.random.uniform(k2, init_qvel.shape, minval=-RESET_NOISE, maxval=RESET_NOISE)
        return mjx.forward(mx, data0.replace(qpos=qpos, qvel=qvel))

    def healthy(d):  # Gymnasium Hopper-v5's default health check
        z, angle = d.qpos[1], d.qpos[2]
        state = jnp.concatenate([d.qpos[2:], d.qvel])
        return jnp.all(jnp.abs(state) < 100.0) & (z > 0.7) & (jnp.abs(angle) < 0.2)

    def env_step(d, key):
        x_before = d.qpos[0]
        d = d.replace(ctrl=jax.random.uniform(key, (model.nu,), minval=-1.0, maxval=1.0))
        d = jax.lax.fori_loop(0, FRAME_SKIP, lambda _, d: mjx.step(mx, d), d)
        forward = (d.qpos[0] - x_before) / (model.opt.timestep * FRAME_SKIP)
        reward = forward + 1.0 - 1e-3 * jnp.sum(d.ctrl ** 2)
        obs = jnp.concatenate([d.qpos[1:], jnp.clip(d.qvel, -10.0, 10.0)])
        done = ~healthy(d)
        return d, (reward, obs.sum(), done)

    @jax.jit
    def run(d, first, key):
        # Auto-reset as Brax does it: a finished env goes back to its own first state (reset
        # noise drawn once), so no reset is simulated inside the vmapped step.
        def body(carry, key):
            d, first = carry
            d, (reward, obs_sum, done) = jax.vmap(env_step)(d, jax.random.split(key, d.qpos.shape[0]))
            d = jax.tree.map(lambda a, b: jnp.where(done.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), first, d)
            return (d, first), (reward.sum() + obs_sum.sum(), done.sum())  # outputs kept: no dead code

        (d, _), (total, resets) = jax.lax.scan(body, (d, first), jax.random.split(key, SCAN))
        return d, total.sum(), resets.sum()

    for n in batches:
        key = jax.random.PRNGKey(0)
        first = d = jax.jit(jax.vmap(reset))(jax.random.split(key, n))
        start = time.perf_counter()
        d, total, resets = run(d, first, key)
        jax.block_until_ready(total)
        compile_s = time.perf_counter() - start
        calls, resets_sum, start, cpu = 0, 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds or calls < 2:
            key, sub = jax.random.split(key)
            d, total, resets = run(d, first, sub)
            jax.block_until_ready(total)
            calls += 1
            resets_sum += int(resets)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        steps = calls * SCAN * n
        print(json.dumps({"n": n, "steps_per_s": steps / elapsed, "steps_per_cpu_s": steps / cpu, "compile_s": compile_s,
                          "episodes": resets_sum, "steps": steps, "mujoco": mujoco.__version__,
                          "jax": jax.__version__, "device": str(jax.devices()[0])}), flush=True)


# ---------------------------------------------------------------- host side (rltune's venv)
def host_single(seconds: float) -> tuple[float, float]:
    """One Gymnasium Hopper-v5 in a plain Python loop (reset on termination)."""
    import gymnasium
    import numpy as np

    env = gymnasium.make("Hopper-v5")
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (4096, 3))
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for a in actions[:256]:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        steps += 256
    rates = steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)
    env.close()
    return rates


def host_vector(n: int, seconds: float) -> tuple[float, float]:
    """rltune's host-loop vector env (Gymnasium SyncVectorEnv, same-step auto-reset) with n envs."""
    import numpy as np

    from rltune.envs.gym_vec import VecEnv

    venv = VecEnv("Hopper-v5", n, seed=0)
    rng = np.random.default_rng(0)
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or calls < 2:
        venv.step(rng.uniform(-1, 1, (n, 3)).astype(np.float32))
        calls += 1
    rates = calls * n / (time.perf_counter() - start), calls * n / (time.process_time() - cpu)
    venv.close()
    return rates


def hopper_xml() -> str:
    import gymnasium.envs.mujoco as gm

    return os.path.join(os.path.dirname(gm.__file__), "assets", "hopper.xml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mjx-python", default=None, help="A Python with mujoco-mjx and jax (see above).")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 256, 1024])
    parser.add_argument("--seconds", type=float, default=3.0, help="Timed stepping per measurement.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--xml", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mjx_worker(args.xml, args.batch, args.seconds)
        return

    print(f"load average at start: {_load()}", flush=True)
    mjx_rows = {}
    if args.mjx_python:
        cmd = [args.mjx_python, os.path.abspath(__file__), "--worker", "--xml", hopper_xml(),
               "--seconds", str(args.seconds), "--batch", *map(str, args.batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
        if out.returncode:
            sys.exit(f"MJX worker failed ({out.returncode}):\n{out.stderr[-3000:]}")
        for line in out.stdout.splitlines():
            if not line.startswith("{"):  # MJX prints notes (no warp) on stdout
                continue
            row = json.loads(line)
            mjx_rows[row["n"]] = row
        first = next(iter(mjx_rows.values()))
        print(f"MJX: mujoco {first['mujoco']}, jax {first['jax']}, device {first['device']}; "
              f"load average after MJX: {_load()}", flush=True)
    single, single_cpu = host_single(args.seconds)
    print(f"Gymnasium Hopper-v5, one env, Python loop: {single:,.0f} env steps/s, "
          f"{single_cpu:,.0f} per CPU second", flush=True)
    print("\n| N envs | host loop steps/s | MJX steps/s | host steps per CPU s | MJX steps per CPU s "
          "| MJX / host (per CPU s) | MJX compile s |")
    print("|---|---|---|---|---|---|---|")
    for n in args.batch:
        host, host_cpu = host_vector(n, args.seconds)
        row = mjx_rows.get(n)
        cells = [f"{host:,.0f}", f"{row['steps_per_s']:,.0f}" if row else "-", f"{host_cpu:,.0f}",
                 f"{row['steps_per_cpu_s']:,.0f}" if row else "-",
                 f"{row['steps_per_cpu_s'] / host_cpu:.2f}x" if row else "-",
                 f"{row['compile_s']:.0f}" if row else "-"]
        print(f"| {n} | {' | '.join(cells)} |", flush=True)
    print(f"\nload average at end: {_load()}; {os.cpu_count()} CPU cores")


if __name__ == "__main__":
    main()
