"""Videos of a CartPole agent before and after a tiny training (`rltune train --capture-video`,
`rltune record`), and the run report that embeds them."""

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from rltune.cli import main
from rltune.errors import UsageError
from rltune.record import record, render_env_id


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "run"
    assert main(["train", "ppo", "--env", "CartPole-v1", "--total-steps", "20480", "--num-envs", "4",
                 "--num-steps", "128", "--eval-episodes", "0", "--out", str(out), "--capture-video"]) == 0
    return out


def mp4_frames(path):
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return [np.asarray(f) for f in reader]


def test_train_captures_before_and_after_videos_that_differ(run_dir):
    before, after = mp4_frames(run_dir / "video" / "before.mp4"), mp4_frames(run_dir / "video" / "after.mp4")
    assert before[0].shape == after[0].shape == (400, 600, 3)  # Gymnasium's CartPole renderer
    # The untrained policy drops the pole within a few dozen steps; 20k steps of PPO hold it longer.
    assert 2 <= len(before) < 60 and len(after) > 2 * len(before)
    assert np.abs(after[len(before) - 1].astype(int) - before[-1].astype(int)).mean() > 0.5


def test_record_gif_frame_count_matches_the_episode(run_dir, tmp_path):
    rec = record(run_dir, tmp_path / "after.gif", episodes=2, seed=3, max_steps=40)
    assert rec.lengths == (40, 40)  # the trained agent outlives the cap
    assert rec.frames == sum(rec.lengths) + 2  # a frame after each reset and after each step
    assert rec.returns == tuple(float(n) for n in rec.lengths)  # CartPole: reward 1 per step
    with Image.open(tmp_path / "after.gif") as gif:
        assert gif.size == (600, 400)
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    # Pillow merges identical consecutive frames into one longer frame: count in time (50 fps).
    assert sum(durations) == pytest.approx(rec.frames * 20, abs=gif.n_frames)
    before = record(run_dir, tmp_path / "before.gif", before=True, episodes=2, seed=3, max_steps=40)
    assert before.frames < rec.frames and max(before.lengths) < 40
    with Image.open(tmp_path / "before.gif") as gif:
        first_before = np.asarray(gif.convert("RGB"))
    with Image.open(tmp_path / "after.gif") as gif:
        gif.seek(min(before.frames, gif.n_frames) - 1)
        assert np.abs(np.asarray(gif.convert("RGB")).astype(int) - first_before.astype(int)).max() > 0


def test_record_cli_and_its_usage_errors(run_dir, tmp_path, capsys):
    assert main(["record", str(run_dir), "--before", "--out", str(tmp_path / "b.mp4")]) == 0
    assert "frames of CartPole-v1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["record", str(run_dir), "--out", str(tmp_path / "x.avi")])
    assert exc.value.code == 2 and ".mp4 or .gif" in capsys.readouterr().err
    assert not (tmp_path / "x.avi").exists()
    with pytest.raises(UsageError, match="no Gymnasium twin"):
        render_env_id("Breakout-MinAtar", "gymnax")


def test_run_report_embeds_both_videos_and_every_metric(run_dir):
    from rltune.report import run_report

    page = run_report(run_dir)
    assert page.count("<video") == 2 and "before training" in page and "after training" in page
    assert page.count('<figure class="plot">') == 1 and "<script" not in page


def test_record_best_of_a_study_directory(run_dir, tmp_path, capsys):
    import json
    import shutil

    from rltune.record import record_best

    study = tmp_path / "study"
    shutil.copytree(run_dir, study / "trials" / "3")
    (study / "trials" / "4").mkdir()  # an external trainer's trial: no rltune checkpoint
    (study / "summary.json").write_text(json.dumps({"best": {"number": 3}}))
    path = record_best(study)
    assert path == study / "best.mp4" and len(mp4_frames(path)) > 20
    assert record_best(study, 4) is None
    assert "no rltune checkpoint" in capsys.readouterr().out
