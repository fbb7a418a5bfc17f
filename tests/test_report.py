"""`rltune report` on a tiny real study, opened in headless Chromium."""

import re
import sys
import textwrap
from pathlib import Path

import pytest

from browser import chromium, open_page
from rltune.cli import main
from rltune.report import assign_slots

TINY_TRAINER = Path(__file__).parent / "trainers" / "tiny_trainer.py"
ARTIFACTS = Path(__file__).parent / "artifacts"  # gitignored: screenshots for a person to look at

PLOTS = "Array.from(document.querySelectorAll('figure.plot img')).map(i => i.naturalWidth * i.naturalHeight)"
CHECK = f"""JSON.stringify({{plots: {PLOTS},
  sections: Array.from(document.querySelectorAll('section h2')).map(h => h.textContent),
  rows: document.querySelectorAll('table.trials tbody tr').length,
  best: (document.querySelector('tr.best td') || {{}}).textContent}})"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    spec = tmp / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        name: reported
        trainer: {job_dir: true}
        metric: reward
        search_space:
          learning_rate: {type: float, low: 1.0e-5, high: 1.0e-1, scale: log}
          sleep: {type: float, low: 0.02, high: 0.08}
        budget_steps: 60
        trials: 6
        parallel: 1
        scheduler: {name: median, min_trials: 2}
        sampler: {name: random, seed: 0}
    """))
    out = tmp / "study"
    assert main(["tune", str(spec), "--out", str(out), "--", sys.executable, str(TINY_TRAINER),
                 "--steps", "6"]) == 0
    return out


def test_report_of_a_study_opens_offline_with_every_plot_drawn(study, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert main(["report", str(study), "--out", str(page)]) == 0
    text = page.read_text()
    assert "<script" not in text and not re.search(r'(src|href)="(https?:)?//', text)  # nothing to fetch
    if chromium() is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    result = open_page(page.resolve().as_uri(), CHECK)
    assert result.errors == []
    import json
    info = json.loads(result.value)
    assert info["sections"][:5] == ["Optimization history", "Learning curves", "Parameters against the objective",
                                    "Parameter importance", "Timeline of trials on slots"]
    assert len(info["plots"]) == 5 and all(area > 100 * 100 for area in info["plots"])
    assert info["rows"] == 6 and info["best"] is not None
    assert result.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(result.screenshot) > 20_000
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "study_report.png").write_bytes(result.screenshot)


def test_report_marks_stopped_trials_and_the_best(study, capsys):
    from rltune.report import study_report

    html = study_report(study)
    table = html[html.index('<table class="trials">'):]
    assert table.count("<tr") == 7  # header + 6 trials
    assert "<td>stop</td>" in table  # the median rule stopped someone: drawn with an x on the curves
    assert 'class="best"' in table


def test_report_of_something_else_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path)])
    assert exc.value.code == 2
    assert "neither a study directory" in capsys.readouterr().err


def test_slots_are_reused_when_free():
    slots = assign_slots([(0, 0, 5), (1, 0, 3), (2, 3, 6), (3, 5, 9), (4, 6, 7)])
    assert slots == {0: 0, 1: 1, 2: 1, 3: 0, 4: 1}


def test_paused_trials_from_the_storage_attributes(tmp_path):
    """The driver records a scheduler pause as the user attribute `pauses`; a RUNNING trial whose
    last pause has not resumed is shown as paused, and the report draws its stretches."""
    import time as _time

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from rltune.report import study_report
    from rltune.tune.results import read_study
    from rltune.tune.spec import dump_spec, spec_from_dict

    spec = spec_from_dict({"name": "paused", "command": ["true"], "budget_steps": 100, "trials": 3,
                           "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}}})
    (tmp_path / "trials").mkdir()
    dump_spec(spec, tmp_path / "spec.yaml")
    study = optuna.create_study(study_name="paused", storage=f"sqlite:///{tmp_path / 'study.db'}",
                                direction="maximize")
    dist = {"x": FloatDistribution(0.0, 1.0)}
    now = _time.time()
    study.add_trial(create_trial(params={"x": 0.2}, distributions=dist, value=2.0,
                                 intermediate_values={50: 1.0, 100: 2.0}))
    study.add_trial(create_trial(params={"x": 0.7}, distributions=dist, value=3.0,
                                 intermediate_values={50: 1.5, 100: 3.0},
                                 user_attrs={"pauses": [{"paused": now - 3, "resumed": now - 2, "step": 50}]}))
    study.add_trial(create_trial(state=TrialState.RUNNING, params={"x": 0.9}, distributions=dist,
                                 intermediate_values={50: 0.5}, user_attrs={"pauses": [[now - 1, None, 50]]}))
    view = read_study(tmp_path)
    assert [r.state for r in view.trials] == ["COMPLETE", "COMPLETE", "PAUSED"]
    assert view.trials[2].step == 50 and view.trials[2].value == 0.5
    page = study_report(tmp_path)
    assert page.count('<figure class="plot">') == 5 and "<td>pause</td>" in page
