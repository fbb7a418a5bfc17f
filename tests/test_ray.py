"""The Ray executor on a real multi-node Ray cluster on this machine (Ray's own `Cluster`
utility: one head and worker nodes of 1 logical CPU each), bound to 127.0.0.1 only."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only; read when Ray is imported
ray = pytest.importorskip("ray")

from rltune.tune.spec import spec_from_dict  # noqa: E402
from rltune.tune.storage import trial_result_attrs  # noqa: E402
from rltune.tune.study import run_study  # noqa: E402

pytestmark = pytest.mark.ray
TINY_TRAINER = Path(__file__).parent / "trainers" / "tiny_trainer.py"
TINY_PPO = {"num_envs": 4, "num_steps": 32, "hidden_size": 16}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def ppo_spec(address, **overrides):
    data = {"name": "ray-ppo", "agent": "ppo", "env": "CartPole-v1", "fixed": TINY_PPO, "budget_steps": 4096,
            "search_space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "scale": "log"}},
            "trials": 6, "parallel": 2, "sampler": {"name": "random", "seed": 0}, "executor": "ray",
            "address": address}
    data.update(overrides)
    return spec_from_dict(data)


def stored_trials(study_dir, name):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}").get_trials()


def test_cluster_binds_to_loopback_only(cluster):
    ray.init(address=cluster.address)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2
        assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    finally:
        ray.shutdown()
    host, port = cluster.address.rsplit(":", 1)
    assert host == "127.0.0.1"
    # the GCS answers on loopback and not on the machine's interface address
    socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
    interface = _interface_address()
    if interface is not None:
        with pytest.raises(OSError):
            socket.create_connection((interface, int(port)), timeout=2).close()


def _interface_address():
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    addresses = [a for a in out if not a.startswith("127.") and ":" not in a]
    return addresses[0] if addresses else None


def test_builtin_study_runs_trials_on_both_nodes(cluster, tmp_path):
    out = tmp_path / "study"
    result = run_study(ppo_spec(cluster.address), out, eval_episodes=0)
    assert len(result.records) == 6 and all(r.state == "COMPLETE" for r in result.records)
    trials = stored_trials(out, "ray-ppo")
    nodes = {trial_result_attrs(t)["node"] for t in trials}
    assert len(nodes) == 2  # both nodes ran trials
    for r in result.records:  # every trial's files were shipped back to the study directory
        trial_dir = out / "trials" / str(r.number)
        assert (trial_dir / "checkpoints" / "last.msgpack").exists()
        assert json.loads((trial_dir / "summary.json").read_text())["env_steps"] == 4096
        assert list((trial_dir / "tb").rglob("events.out.tfevents.*"))
    assert (out / "best_config.yaml").exists()
    # each actor's worker handed its profile table to the driver (nodes need share no files)
    profile = json.loads((out / "profile.json").read_text())
    assert profile["worker_processes"] == 2
    assert profile["workers"]["train"] > 0 and profile["workers"]["compile"] > 0
    assert profile["workers"]["wall"] <= 2 * profile["study_wall"]
    assert profile["driver"]["start"] > 0  # connecting to the cluster, placing the actors
    assert not (out / "profile").exists()  # merged, then removed


def test_population_shards_on_ray(cluster, tmp_path):
    out = tmp_path / "study"
    spec = ppo_spec(cluster.address, name="ray-pop", population=True, trials=4)
    result = run_study(spec, out, eval_episodes=0, population_size=2)
    assert len(result.records) == 4 and all(r.state == "COMPLETE" for r in result.records)
    assert len({trial_result_attrs(t)["node"] for t in stored_trials(out, "ray-pop")}) == 2


def test_external_trainer_study_on_ray(cluster, tmp_path):
    import math

    spec = spec_from_dict({"name": "ray-ext", "command": [sys.executable, str(TINY_TRAINER), "--steps", "3"],
                           "search_space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1,
                                                              "scale": "log"}},
                           "metric": "reward", "trainer": {"job_dir": True}, "trials": 4, "parallel": 2,
                           "sampler": {"name": "random", "seed": 0}, "executor": "ray",
                           "address": cluster.address})
    out = tmp_path / "study"
    result = run_study(spec, out)
    assert all(r.state == "COMPLETE" for r in result.records) and len(result.records) == 4
    for r in result.records:
        assert r.value == pytest.approx(-((math.log10(r.params["learning_rate"]) + 3) ** 2), abs=1e-5)
        assert (out / "trials" / str(r.number) / "trainer.log").exists()


def test_hypertrick_on_ray(cluster, tmp_path):
    spec = ppo_spec(cluster.address, name="ray-ht", trials=8, budget_steps=10240,
                    search_space={"learning_rate": {"type": "float", "low": 1e-6, "high": 3e-3, "scale": "log"}},
                    sampler={"name": "random", "seed": 1}, scheduler={"name": "hypertrick", "num_phases": 5, "r": 0.5})
    result = run_study(spec, tmp_path / "study", eval_episodes=0)
    pruned = [r for r in result.records if r.state == "PRUNED"]
    assert pruned and all(r.step < 10240 for r in pruned)
    assert any(r.state == "COMPLETE" for r in result.records)


def test_successive_halving_pauses_and_resumes_on_ray(cluster, tmp_path):
    spec = ppo_spec(cluster.address, name="ray-sh", trials=4, budget_steps=16384,
                    search_space={"learning_rate": {"type": "float", "low": 1e-5, "high": 3e-3, "scale": "log"}},
                    scheduler={"name": "successive_halving", "reduction_factor": 2, "min_steps": 4096})
    out = tmp_path / "study"
    result = run_study(spec, out, eval_episodes=0)
    states = sorted(r.state for r in result.records)
    assert states.count("COMPLETE") == 1 and states.count("PRUNED") == 3
    winner = next(r for r in result.records if r.state == "COMPLETE")
    # paused at each rung, resumed from its shipped checkpoint (maybe on the other node): no restart
    steps = [json.loads(line)["step"] for line in (out / "trials" / str(winner.number) / "metrics.jsonl").open()]
    assert steps == sorted(steps) and steps[-1] == 16384 and 4096 in steps and 8192 in steps


def test_pbt_on_ray_copies_checkpoints_across_nodes(cluster, tmp_path):
    spec = ppo_spec(cluster.address, name="ray-pbt", trials=4, budget_steps=4096,
                    fixed={**TINY_PPO, "anneal_lr": False},
                    search_space={"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "scale": "log"}},
                    scheduler={"name": "pbt", "interval": 1024, "quantile": 0.25})
    out = tmp_path / "study"
    result = run_study(spec, out, eval_episodes=0)
    assert [r.state for r in result.records] == ["COMPLETE"] * 4
    stored = {t.number: trial_result_attrs(t) for t in stored_trials(out, "ray-pbt")}
    assert len({a["node"] for a in stored.values()}) == 2
    lineage = {t.number: t.user_attrs["pbt_lineage"] for t in stored_trials(out, "ray-pbt")}
    assert sum(len(v) for v in lineage.values()) == 3  # one copy at each of the 3 intervals
    for n, copies in lineage.items():
        steps = [json.loads(line)["step"] for line in (out / "trials" / str(n) / "metrics.jsonl").open()]
        assert steps == sorted(set(steps)) and steps[-1] == 4096  # resumed, never restarted
        for c in copies:
            assert c["step"] in (1024, 2048, 3072) and 1e-4 <= c["hps"]["learning_rate"] <= 3e-2
    best = json.loads((out / "summary.json").read_text())["best"]["number"]
    assert "hp_schedule" in (out / "best_config.yaml").read_text() and best in lineage


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_node_removed_mid_study_trials_continue_elsewhere(cluster, tmp_path):
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    raylet_pid = node.all_processes["raylet"][0].process.pid
    out = tmp_path / "study"
    spec = ppo_spec(cluster.address, name="ray-fault", trials=5, parallel=3, budget_steps=262144)
    removed = threading.Event()

    def remove_when_a_trial_runs_there():
        end = time.time() + 300
        while time.time() < end:
            for trial_dir in (out / "trials").glob("*"):
                pid_file, ckpt = trial_dir / "pid", trial_dir / "checkpoints" / "last.msgpack"
                running = not (trial_dir / "summary.json").exists()
                if pid_file.exists() and ckpt.exists() and running and \
                        _parent_pid(int(pid_file.read_text())) == raylet_pid:
                    cluster.remove_node(node)
                    removed.set()
                    return
            time.sleep(0.2)

    remover = threading.Thread(target=remove_when_a_trial_runs_there, daemon=True)
    remover.start()
    result = run_study(spec, out, eval_episodes=0)
    remover.join(timeout=10)
    assert removed.is_set()
    assert len(result.records) == 5 and all(r.state == "COMPLETE" for r in result.records)
    moved = [r for r in result.records if r.retries]
    assert moved and all("from checkpoint" in r.retries[0] for r in moved)
    for r in moved:  # it continued from its checkpoint: its steps never went back to the start
        steps = [json.loads(line)["step"] for line in (out / "trials" / str(r.number) / "metrics.jsonl").open()]
        assert steps == sorted(set(steps)) and steps[-1] == 262144
    stored = {t.number: trial_result_attrs(t) for t in stored_trials(out, "ray-fault")}
    assert all(stored[r.number].get("retries") for r in moved)


def test_missing_ray_is_a_usage_error_with_the_install_command(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # what Python does for a package that is absent
            "from rltune.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "tune", "--executor", "ray", "--out", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert 'pip install "rltune[ray]"' in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()


LOCAL_RAY_LISTENERS = """
import sys
import psutil
import ray  # imported before rltune, as a user's own code may: the loopback setting must still hold
from rltune.tune.executors.base import ExecutorOptions
from rltune.tune.executors.ray import RayExecutor

executor = RayExecutor(ExecutorOptions(parallel=1))
executor.start()
try:
    pids = {p.pid for p in psutil.Process().children(recursive=True)} | {psutil.Process().pid}
    listening = {c.laddr.ip for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids}
    print(sorted(listening))
finally:
    executor.shutdown()
"""


def test_a_local_ray_started_by_rltune_listens_on_loopback_only():
    # a fresh interpreter without the loopback variable, nor the module cluster's RAY_ADDRESS
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    proc = subprocess.run([sys.executable, "-c", LOCAL_RAY_LISTENERS], capture_output=True, text=True,
                          timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listening = eval(proc.stdout.strip().splitlines()[-1])  # a printed list of address strings
    assert listening  # Ray's GCS and raylet listen
    assert set(listening) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
