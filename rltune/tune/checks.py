"""Checks on a study directory and its storage, made before a driver writes anything.

Pure reads: the study driver calls them (fresh run and ``--resume``) and turns nothing into
state. Each raises UsageError naming the flag to fix.

    check_out_dir(path)                   # --out must be a directory (or not exist yet)
    check_study_db(path, name)            # --resume: study.db is an Optuna SQLite file holding `name`
    check_resume_spec(study_dir, spec)    # --resume: the spec is the stored one, up to allowed changes
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml

from rltune import yamlsafe
from rltune.errors import UsageError
from rltune.tune.spec import RESUMABLE_CHANGES, StudySpec, spec_differences, spec_to_dict

__all__ = ["check_out_dir", "check_resume_spec", "check_study_db", "stored_spec"]

# Tables every Optuna RDB storage has (optuna/storages/_rdb/models.py), since Optuna 1.x.
_OPTUNA_TABLES = ("studies", "trials", "trial_params", "trial_values", "version_info")


def check_out_dir(path: str | Path, *, flag: str = "--out") -> Path:
    """`path` must be a directory or not exist yet (then its nearest existing parent must be a
    directory); a file there is a UsageError instead of a traceback from mkdir."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(flag, f"{path} is a file, not a directory: choose another {flag}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(flag, f"{parent} (in {path}) is a file, not a directory: choose another {flag}")
            break
    return path


def check_study_db(path: str | Path, study_name: str | None = None, *, flag: str = "--resume") -> None:
    """A study.db to resume must be a sound SQLite file with Optuna's tables (and, when
    `study_name` is given, that study). Opened read-only: a corrupt file is never touched."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(flag, f"there is no study to resume: {path} does not exist")
    if path.stat().st_size == 0:
        raise UsageError(flag, f"{path} is empty (a run stopped before it wrote its first trial?): "
                         "delete the study directory and start again")
    try:
        con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise UsageError(flag, f"cannot open {path}: {exc}") from None
    try:
        status = con.execute("PRAGMA quick_check").fetchone()
        if not status or status[0] != "ok":
            raise UsageError(flag, f"{path} is corrupt (sqlite quick_check: {status and status[0]})")
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = [t for t in _OPTUNA_TABLES if t not in tables]
        if missing:
            raise UsageError(flag, f"{path} is not an Optuna study database (no table {missing[0]!r})")
        if study_name is not None:
            names = [row[0] for row in con.execute("SELECT study_name FROM studies")]
            if study_name not in names:
                held = ", ".join(map(repr, names)) or "none"
                raise UsageError(flag, f"{path} holds no study {study_name!r} (it holds: {held}); "
                                 "resume with the spec that made it")
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise UsageError(flag, f"{path} is not a readable SQLite database ({exc})") from None
    finally:
        con.close()


def stored_spec(study_dir: str | Path, *, flag: str = "--resume") -> dict[str, Any]:
    """The native-format mapping in `study_dir`/spec.yaml (what the earlier run wrote)."""
    path = Path(study_dir) / "spec.yaml"
    try:
        data = yamlsafe.load(path.read_text())
    except FileNotFoundError:
        raise UsageError(flag, f"{path} is missing: {study_dir} does not hold a study to resume") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(flag, f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(flag, f"{path} is not a study spec")
    return data


def check_resume_spec(study_dir: str | Path, spec: StudySpec, *, flag: str = "--resume") -> None:
    """Refuse to resume `study_dir` with a spec that differs from the stored one in anything
    but `RESUMABLE_CHANGES`; the message lists every difference. Call it before spec.yaml is
    written again."""
    differences = spec_differences(stored_spec(study_dir, flag=flag), spec_to_dict(spec))
    if differences:
        listed = "; ".join(differences)
        raise UsageError(flag, f"the spec differs from the one {study_dir} was run with ({listed}). "
                         f"Resume with the same spec (only {', '.join(RESUMABLE_CHANGES)} may change), "
                         "or start a new study with another --out")
