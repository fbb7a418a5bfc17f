"""PBT lineage as the study driver learns it: which member copied which, and each member's
hyperparameter schedule along its lineage (the driver stores both; `best_config.yaml` replays
the best member's schedule as `hp_schedule`)."""

from __future__ import annotations

from pathlib import Path

from rltune.tune.executors.base import Exploited
from rltune.tune.resolve import agent_config
from rltune.tune.spec import StudySpec


class PBTLineage:
    """What PBT did to each member, as the driver learns it from `Exploited` events: its lineage
    (which member it copied at which step) and its hyperparameter schedule along that lineage,
    `[[step, {hp: value}], ...]`. A schedule entry that starts a copy carries a third element,
    the member's trial number, with which the copy's random stream was folded (`hp_schedule`)."""

    def __init__(self, spec: StudySpec, names: list[str]):
        self.spec = spec
        self.names = list(names)
        self.schedule: dict[int, list] = {}
        self.lineage: dict[int, list[dict]] = {}
        self.root: dict[int, int] = {}  # the member whose initial state (seed) the lineage starts from

    def start(self, number: int, params: dict) -> None:
        config = agent_config(self.spec, params)
        self.schedule[number] = [[0, {n: getattr(config, n) for n in self.names}]]
        self.lineage[number] = []
        self.root[number] = number

    def exploited(self, event: Exploited) -> None:
        source = self.schedule.get(event.source, [])
        self.schedule[event.trial_id] = [e for e in source if e[0] <= event.step] + \
            [[event.step, dict(event.hps), event.trial_id]]
        self.root[event.trial_id] = self.root.get(event.source, event.source)
        self.lineage[event.trial_id].append({"step": event.step, "from": event.source, "reason": event.reason,
                                             "hps": dict(event.hps)})

    def attrs(self, number: int) -> dict:
        if number not in self.schedule:
            return {}
        return {"pbt_lineage": self.lineage[number], "pbt_schedule": self.schedule[number],
                "pbt_root": self.root[number]}

    def replay_params(self, number: int, records: dict) -> dict:
        """The config values that replay trial `number`: its root's sampled values (the initial
        state) and the schedule as `hp_schedule`."""
        import json

        root = records.get(self.root[number])
        params = dict(root.params if root is not None else records[number].params)
        params["hp_schedule"] = json.dumps(self.schedule[number])
        return params


def write_json(path: Path, data) -> None:
    import json

    if path.parent.is_dir():
        path.write_text(json.dumps(data, indent=1))
