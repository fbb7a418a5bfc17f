"""TensorBoard output read back with TensorBoard's own reader: HParams per trial, run names
that say which trial and params, charts/ tags (episodes, eval return, learning rate)."""

import json

import pytest
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import api_pb2, metadata

from rltune.agents import get_agent
from rltune.config import from_dict
from rltune.runner import RunOptions, train
from rltune.tune.results import tb_run_name


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    trials = tmp_path_factory.mktemp("study") / "trials"
    params = {"learning_rate": 1e-3, "gamma": 0.99}
    config = from_dict(get_agent("ppo").Config, {"env": "CartPole-v1", "total_steps": 4096, "num_envs": 4,
                                                 "num_steps": 32, **params})
    name = tb_run_name(7, params)
    summary = train("ppo", config, trials / "7", options=RunOptions(segment_steps=1024, eval_episodes=2,
                                                                     hparams=params, tb_run=name))
    mux = EventMultiplexer().AddRunsFromDirectory(str(trials))  # as `tensorboard --logdir STUDY/trials`
    mux.Reload()
    return trials, name, summary, config, mux


def test_trial_runs_are_named_by_trial_and_params(trial):
    _, name, _, _, mux = trial
    assert name == "trial-7 learning_rate=1e-3 gamma=0.99"
    assert list(mux.Runs()) == [f"7/tb/{name}"]


def test_tags_episodes_eval_return_and_learning_rate(trial):
    trials, name, summary, config, mux = trial
    run = f"7/tb/{name}"
    tags = set(mux.GetAccumulator(run).Tags()["scalars"])
    assert {"charts/reward", "charts/episodes", "charts/eval_return", "charts/learning_rate",
            "charts/steps_per_second", "losses/loss", "losses/entropy"} <= tags
    assert "losses/episodes" not in tags
    [ev] = mux.Scalars(run, "charts/eval_return")
    assert ev.value == pytest.approx(summary["eval"]["mean"]) and ev.step == 4096
    lr = mux.Scalars(run, "charts/learning_rate")
    # PPO anneals linearly to 0: after update u of 32, the rate is lr * (1 - u / 32)
    assert [e.step for e in lr] == [1024, 2048, 3072, 4096]
    assert [e.value for e in lr] == pytest.approx([1e-3 * (1 - u / 32) for u in (8, 16, 24, 32)], abs=1e-9)
    episodes = [e.value for e in mux.Scalars(run, "charts/episodes")]
    assert episodes == sorted(episodes) and episodes[-1] > 0


def test_hparams_session_for_the_hparams_tab(trial):
    _, name, _, _, mux = trial
    content = mux.PluginRunToTagToContent(metadata.PLUGIN_NAME)[f"7/tb/{name}"]
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert {k: v.number_value for k, v in start.hparams.items()} == {"learning_rate": 1e-3, "gamma": 0.99}
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert {m.name.tag for m in experiment.metric_infos} == {"charts/reward", "charts/eval_return",
                                                             "charts/episode_length"}


def test_steps_per_second_leaves_compile_time_out(trial):
    trials = trial[0]
    lines = [json.loads(line) for line in (trials / "7" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["compile_seconds"] > 0  # the first segment compiled ...
    assert all("compile_seconds" not in m for m in lines[1:])  # ... the others reused it
    wall_first = lines[0]["wall_time"]
    # with compile time counted, the first segment's rate would be below 1024 / wall_first
    assert lines[0]["steps_per_second"] > 1024 / (wall_first - 0.9 * lines[0]["compile_seconds"])
