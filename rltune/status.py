"""`rltune status STUDY_DIR`: where a study stands, during it (from another terminal) or after.

Only reads: the storage is opened read-only (SQLite refuses any write through the connection)
and no lock is taken, so it never slows or blocks the running study.
"""

from __future__ import annotations

import argparse
import shutil
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Show a study's progress: trials by state, best so far, running trials with their "
                     "last step and metric, elapsed time and an ETA. Reads only.")
    p.add_argument("study_dir", metavar="STUDY_DIR", help="The study directory (`rltune tune --out`).")
    p.add_argument("--storage", help="Optuna storage URL, when the study was run with --storage.")
    p.add_argument("--table", action="store_true", help="Also print every trial.")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="Print again every SECONDS until no trial is running.")
    p.add_argument("--width", type=int, help="Columns (default: the terminal's, at most 100).")


def render(study_dir, storage: str | None = None, *, table: bool = False, width: int = 80) -> str:
    from rltune.tune.results import read_study, render_live, render_table

    view = read_study(study_dir, storage)
    spec = view.spec
    names = spec.space.names
    text = render_live(view.trials, names, name=spec.name, num_trials=spec.num_trials, metric=spec.metric,
                       goal=spec.goal, elapsed=view.elapsed, budget_steps=spec.budget_steps, width=width)
    if table and view.trials:
        text += "\n\n" + render_table(view.trials, names, spec.metric, goal=spec.goal, width=width)
    return text


def _running(study_dir, storage) -> bool:
    from rltune.tune.results import read_study

    return any(r.state in ("RUNNING", "PAUSED") for r in read_study(study_dir, storage).trials)


def run(args) -> int:
    from rltune.errors import UsageError

    if args.watch is not None and args.watch <= 0:
        raise UsageError("--watch", "must be > 0 seconds")
    width = args.width or min(100, shutil.get_terminal_size((80, 24)).columns)
    if width < 40:
        raise UsageError("--width", "must be >= 40")
    while True:
        print(render(args.study_dir, args.storage, table=args.table, width=width), flush=True)
        if args.watch is None or not _running(args.study_dir, args.storage):
            return 0
        time.sleep(args.watch)
        print()
