"""`rltune report STUDY_DIR|RUN_DIR [--out FILE.html]`: one self-contained HTML page.

Plots are matplotlib PNGs inlined as base64 (`data:` URIs), videos too: the page needs no
network, no JavaScript and no other file, so it opens offline, from an e-mail or an archive.
(plotly would add interactivity at 4.8 MB of inlined JavaScript per page; a typical report here
is a few hundred KB.)

A study report: optimization history, learning curves coloured by final state with the points
where the scheduler stopped or paused trials, each parameter against the objective, parameter
importance (Optuna's evaluator), a timeline of trials on slots, the best trial's config and
video, and the trials table. A training run's report: every metric curve, config, summary and
its before/after videos.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from rltune.errors import UsageError

STATE_COLOR = {"COMPLETE": "#2ca02c", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "RUNNING": "#1f77b4",
               "PAUSED": "#9467bd", "WAITING": "#7f7f7f"}
STATE_LABEL = {"COMPLETE": "completed", "PRUNED": "stopped early", "FAIL": "failed", "RUNNING": "running",
               "PAUSED": "paused", "WAITING": "waiting"}
VIDEO_NAMES = ("best.mp4", "best.gif", "video/after.mp4", "video/after.gif")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Write one self-contained HTML file (opens offline) of a study directory or a "
                     "training run directory.")
    p.add_argument("path", metavar="STUDY_DIR|RUN_DIR", help="A `rltune tune --out` or `rltune train --out` directory.")
    p.add_argument("--out", help="HTML file to write (default: PATH/report.html).")
    p.add_argument("--storage", help="Optuna storage URL, when the study was run with --storage.")


def run(args) -> int:
    path = Path(args.path)
    out = Path(args.out) if args.out else path / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError("--out", f"the report is an HTML file: give a name ending in .html (got {out})")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("report", "plots need the report extra: pip install 'rltune[report]'") from None
    page = build_report(path, storage=args.storage)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    print(f"report: {out} ({len(page.encode()) / 1e3:.0f} KB)")
    return 0


def build_report(path: str | Path, storage: str | None = None) -> str:
    """The HTML page for a study directory or a run directory."""
    path = Path(path)
    if (path / "spec.yaml").is_file():
        return study_report(path, storage)
    if (path / "metrics.jsonl").is_file():
        return run_report(path)
    raise UsageError("STUDY_DIR|RUN_DIR", f"{path} is neither a study directory (spec.yaml) nor a training "
                     "run directory (metrics.jsonl)")


# ---------------------------------------------------------------- figures
def _figure(width: float = 8.0, height: float = 4.0):
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend state

    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _plot(fig, title: str, caption: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure class="plot"><img alt="{html.escape(title)}" src="data:image/png;base64,{_png(fig)}">'
            f"{cap}</figure>")


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _legend_states(ax, states, above: bool = False) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=STATE_COLOR[s], marker="o", linestyle="", label=STATE_LABEL[s])
               for s in STATE_COLOR if s in states]
    if handles and above:
        ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1, 1), ncol=len(handles), fontsize=8,
                  frameon=False)
    elif handles:
        ax.legend(handles=handles, loc="best", fontsize=8)


def history_plot(trials, metric: str, goal: str) -> str:
    done = [r for r in trials if r.value is not None and math.isfinite(r.value)]
    if not done:
        return _note("No trial has reported a value yet.")
    fig = _figure()
    ax = fig.add_subplot()
    for r in done:
        ax.scatter(r.number, r.value, color=STATE_COLOR.get(r.state, "k"), s=22, zorder=3)
    finished = sorted((r for r in done if r.state in ("COMPLETE", "PRUNED")), key=lambda r: r.number)
    if finished:
        best, xs, ys = None, [], []
        for r in finished:
            if best is None or (r.value > best if goal == "maximize" else r.value < best):
                best = r.value
            xs.append(r.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="k", lw=1.2, label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    _legend_states(ax, {r.state for r in done})
    return _plot(fig, "optimization history", f"{metric} of each trial (last value for stopped and running "
                 "trials); the line is the best so far.")


def curves_plot(trials, metric: str) -> str:
    with_curves = [r for r in trials if r.curve]
    if not with_curves:
        return _note("No learning curve recorded.")
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    for r in with_curves:
        steps, values = zip(*r.curve)
        color = STATE_COLOR.get(r.state, "k")
        ax.plot(steps, values, color=color, lw=1, alpha=0.8)
        if r.state == "PRUNED":  # where the scheduler stopped it
            ax.scatter(steps[-1], values[-1], marker="x", color=color, s=40, zorder=3)
        for pause in r.pauses:
            step = _pause_step(pause)
            if step is not None:
                y = dict(r.curve).get(step, values[-1])
                ax.scatter(step, y, marker="|", color=STATE_COLOR["PAUSED"], s=120, zorder=3)
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    _legend_states(ax, {r.state for r in with_curves})
    return _plot(fig, "learning curves", f"{metric} over training, coloured by final state; x: stopped by the "
                 "scheduler; |: paused at a barrier.")


def _pause_step(pause) -> int | None:
    from rltune.tune.results import pause_dict

    return pause_dict(pause)["step"]


def _pause_interval(pause) -> tuple[float | None, float | None]:
    from rltune.tune.results import pause_dict

    p = pause_dict(pause)
    return p["paused"], p["resumed"]


def _grid(n: int, row_height: float):
    """A figure of `n` small plots, three a row; the cells past `n` are blank. Returns (figure,
    the n axes in reading order)."""
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(3.2 * cols, row_height * rows)
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


def params_plot(trials, names, scales: dict[str, str], metric: str) -> str:
    done = [r for r in trials if r.value is not None and math.isfinite(r.value)]
    if not done or not names:
        return _note("No trial with a value to plot against its parameters.")
    fig, axes = _grid(len(names), 2.8)
    for name, ax in zip(names, axes):
        points = [(r.params.get(name), r.value, r.state) for r in done if r.params.get(name) is not None]
        numeric = all(isinstance(p[0], (int, float)) for p in points)
        labels = sorted({str(p[0]) for p in points})
        for x, y, state in points:
            ax.scatter(x if numeric else labels.index(str(x)), y, color=STATE_COLOR.get(state, "k"), s=18)
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        elif scales.get(name) == "log" and all(p[0] > 0 for p in points):
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
    return _plot(fig, "parameters", f"{metric} against each hyperparameter, coloured by state.")


def importance_plot(view) -> str:
    import optuna
    from optuna.trial import TrialState

    spec = view.spec
    usable = []
    for t in view.frozen:
        value = t.value
        if t.state == TrialState.PRUNED and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and value is not None and math.isfinite(value) \
                and t.params:
            usable.append(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
    if len(usable) < 2 or not spec.space.names:
        return _note("Parameter importance needs at least two finished trials with a value.")
    study = optuna.create_study(direction=spec.direction)  # in memory: the storage is never written
    study.add_trials(usable)
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as exc:
        return _note(f"Parameter importance could not be computed: {exc}")
    names = list(importances)[::-1]
    fig = _figure(7, 0.5 + 0.45 * len(names))
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names], color="#1f77b4")
    ax.set_xlabel("importance (fANOVA, normalised)")
    return _plot(fig, "parameter importance", f"Optuna's fANOVA importance over {len(usable)} finished trials "
                 "(early-stopped ones at their last reported value).")


def assign_slots(intervals: list[tuple[int, float, float]]) -> dict[int, int]:
    """Trial number -> slot: each trial takes the lowest slot free at its start (the storage
    records start and end times, not which worker ran a trial)."""
    slot_end: list[float] = []
    slots = {}
    for number, start, end in sorted(intervals, key=lambda x: (x[1], x[0])):
        for s, busy_until in enumerate(slot_end):
            if busy_until <= start + 1e-6:
                slot_end[s] = end
                slots[number] = s
                break
        else:
            slots[number] = len(slot_end)
            slot_end.append(end)
    return slots


def timeline_plot(trials, started: float | None) -> str:
    now = time.time()
    timed = [r for r in trials if r.started]
    if not timed or started is None:
        return _note("No trial has started.")
    pieces = []  # (number, start, end, state) of each stretch a trial held a slot
    for r in timed:
        end = r.finished or now
        t0 = r.started
        for pause in sorted(r.pauses, key=lambda p: _pause_interval(p)[0] or 0):
            p0, p1 = _pause_interval(pause)
            if p0 is None:
                continue
            pieces.append((r.number, t0, p0, "PAUSED"))  # this stretch ended in a pause
            t0 = p1 if p1 is not None else end
        if t0 < end:
            pieces.append((r.number, t0, end, r.state))
    slots = assign_slots([(i, a, b) for i, (_, a, b, _) in enumerate(pieces)])
    fig = _figure(8, 0.8 + 0.35 * (max(slots.values()) + 1))
    ax = fig.add_subplot()
    for i, (number, a, b, state) in enumerate(pieces):
        ax.barh(slots[i], b - a, left=a - started, color=STATE_COLOR.get(state, "k"), edgecolor="white", height=0.8)
        if b - a > 0.04 * (now - started):
            ax.text(a - started + (b - a) / 2, slots[i], str(number), ha="center", va="center", fontsize=7,
                    color="white")
    ax.set_xlabel("seconds since the study started")
    ax.set_ylabel("slot")
    ax.set_yticks(range(max(slots.values()) + 1))
    ax.invert_yaxis()
    _legend_states(ax, {p[3] for p in pieces}, above=True)
    return _plot(fig, "timeline", "Trials on slots over time, labelled by trial number and coloured by how the "
                 "stretch ended (a paused trial frees its slot and resumes later).")


def metrics_plot(lines: list[dict]) -> str:
    keys = [k for k in dict.fromkeys(k for m in lines for k in m) if k not in ("step", "wall_time", "time")
            and any(isinstance(m.get(k), (int, float)) for m in lines)]
    if not keys:
        return _note("metrics.jsonl has no metric yet.")
    from matplotlib.ticker import MaxNLocator

    fig, axes = _grid(len(keys), 2.6)
    for key, ax in zip(keys, axes):
        pts = [(m["step"], m[key]) for m in lines if isinstance(m.get(key), (int, float)) and "step" in m]
        if pts:
            ax.plot(*zip(*pts), lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    return _plot(fig, "metrics", "Every metric of the run against env steps (metrics.jsonl).")


# ---------------------------------------------------------------- page pieces
def _video(path: Path | None, title: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    if path.suffix == ".gif":
        return f'<figure class="video"><img alt="{html.escape(title)}" src="data:image/gif;base64,{data}">' \
               f"<figcaption>{html.escape(title)}</figcaption></figure>"
    return (f'<figure class="video"><video controls loop muted src="data:video/mp4;base64,{data}"></video>'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _first(base: Path, names) -> Path | None:
    for name in names:
        if (base / name).is_file():
            return base / name
    return None


def _pre(data: Any) -> str:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    return f"<pre>{html.escape(text)}</pre>"


def trials_table_html(trials, names, metric: str, best_number: int | None) -> str:
    from rltune.tune.results import SHORT_STATE, fmt

    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("#", "state", *names, metric, "eval", "steps",
                                                           "wall s", "reason"))
    rows = []
    for r in sorted(trials, key=lambda r: r.number):
        cells = [str(r.number), SHORT_STATE.get(r.state, r.state), *(fmt(r.params.get(n)) for n in names),
                 fmt(r.value), fmt(r.eval_mean), fmt(r.step),
                 "-" if r.wall_time is None else f"{r.wall_time:.1f}", r.reason or ""]
        cls = ' class="best"' if r.number == best_number else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f'<table class="trials"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
figure{margin:1em 0} figure img, figure video{max-width:100%}
figure.video{display:inline-block;width:46%;margin-right:2%;vertical-align:top} figcaption{font-size:.85em;color:#555}
table.trials{border-collapse:collapse;font-size:.85em} table.trials td,table.trials th{padding:2px 8px;
border-bottom:1px solid #eee;text-align:right} tr.best{background:#e8f5e9;font-weight:bold}
pre{background:#f6f8fa;padding:.8em;font-size:.85em;overflow:auto} .note{color:#777;font-style:italic}
"""


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}"
            f'<footer class="note">written by rltune report, {time.strftime("%Y-%m-%d %H:%M:%S")}</footer>'
            "</body></html>")


# ---------------------------------------------------------------- reports
def study_report(study_dir: Path, storage: str | None = None) -> str:
    from rltune.tune.results import read_study, status_line, eta_seconds

    view = read_study(study_dir, storage)
    spec, trials = view.spec, view.trials
    names = list(spec.space.names)
    scales = {p.name: getattr(p, "scale", "linear") for p in spec.space.params}
    best = view.best
    what = spec.agent or "external command"
    eta = eta_seconds(trials, spec.num_trials, view.elapsed, spec.budget_steps)
    intro = (f"<p>{html.escape(status_line(trials, spec.name, spec.num_trials, view.elapsed, eta))}</p>"
             f"<p>{html.escape(what)}{' on ' + html.escape(spec.env) if spec.env else ''}; sampler "
             f"{html.escape(spec.sampler.name)}, scheduler {html.escape(spec.scheduler.name)}; objective: "
             f"{spec.goal} {html.escape(spec.metric)}.</p>")
    parts = [intro,
             _section("Optimization history", history_plot(trials, spec.metric, spec.goal)),
             _section("Learning curves", curves_plot(trials, spec.metric)),
             _section("Parameters against the objective", params_plot(trials, names, scales, spec.metric)),
             _section("Parameter importance", importance_plot(view)),
             _section("Timeline of trials on slots", timeline_plot(trials, view.started))]
    if best is not None:
        config_file = study_dir / "trials" / str(best.number) / "config.yaml"
        config = config_file.read_text() if config_file.is_file() else yaml.safe_dump(best.params, sort_keys=False)
        video = _first(study_dir, VIDEO_NAMES) or _first(study_dir / "trials" / str(best.number), VIDEO_NAMES)
        from rltune.tune.results import fmt
        parts.append(_section(f"Best trial: {best.number}",
                              f"<p>{html.escape(spec.metric)} {fmt(best.value)}"
                              + (f", evaluation return {fmt(best.eval_mean)}" if best.eval_mean is not None else "")
                              + "</p>" + _pre(config) + _video(video, f"trial {best.number}")))
    else:
        parts.append(_section("Best trial", _note("No trial has finished with a value yet.")))
    parts.append(_section("Trials", trials_table_html(trials, names, spec.metric, best.number if best else None)))
    return _page(f"Study {spec.name}", "".join(parts))


def run_report(run_dir: Path) -> str:
    from rltune.tune.results import read_metrics

    lines = [m for m in read_metrics(run_dir / "metrics.jsonl") if "step" in m]
    parts = []
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        summary.pop("metrics", None)
        parts.append(_section("Summary", _pre(summary)))
    parts.append(_section("Metrics", metrics_plot(lines)))
    videos = "".join(_video(_first(run_dir, (f"video/{w}.mp4", f"video/{w}.gif")), f"{w} training")
                     for w in ("before", "after"))
    if videos:
        parts.append(_section("Agent", videos))
    if (run_dir / "config.yaml").is_file():
        parts.append(_section("Config", _pre((run_dir / "config.yaml").read_text())))
    return _page(f"Run {run_dir.resolve().name}", "".join(parts))
