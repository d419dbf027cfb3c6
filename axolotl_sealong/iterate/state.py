"""``OUT/state.json``: the settings of a run and its finished stages, typed.

A stage is named ``<kind>_<round>`` (``label_2``, ``eval_0``) or just
``<kind>`` (the demo's ``model`` and ``data``); its kind says which record
(:mod:`~axolotl_sealong.iterate.records`) it holds. The file::

    {"format": 2,
     "settings": {...},
     "stages": {"label_1": {"seconds": 12.3, "result": {...}}, ...}}

A stage taken from another run (``--from-run``) also has ``"from_run": DIR``.

Format 2 is the first with a ``format`` key; its records have the shapes the
0.1.0 code wrote since the round policies. So a file without a format (sealong
0.1.0) is resumed when its settings have every key this version records and
every stage's record reads as the typed record of its kind, and is then
rewritten as format 2. One with a record from before the round policies (a
label record without ``signals``, a train record without ``base_model``), and
any other format, is refused with the format found, the one written and the
fix (``--fresh``, or another ``--out``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from axolotl_sealong.iterate.records import (
    EvalRecord,
    GuardRecord,
    LabelRecord,
    ModelRecord,
    QuestionsRecord,
    Record,
    TrainRecord,
    UnionRecord,
)

LOG = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_FORMAT = 2
# The record each kind of stage holds (``label_3`` is a ``label`` stage).
ROUND_STAGES: dict[str, type[Record]] = {
    "questions": QuestionsRecord,
    "guard": GuardRecord,
    "label": LabelRecord,
    "union": UnionRecord,
    "train": TrainRecord,
    "merge": ModelRecord,
    "eval": EvalRecord,
}

R = TypeVar("R", bound=Record)


def stage_kind(name: str) -> str:
    """``label_2`` -> ``label``; a name without a round number is its own kind."""
    kind, _, number = name.rpartition("_")
    return kind if kind and number.isdigit() else name


@dataclass(frozen=True)
class Stage:
    """A finished stage: its record, its seconds, the run it came from."""

    result: Record
    seconds: float
    from_run: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": self.seconds, "result": self.result.to_json()}
        if self.from_run is not None:
            out["from_run"] = self.from_run
        return out


class StateError(ValueError):
    """A state.json this version cannot resume; the message says what to do."""


def format_error(path: Path, found: Any, why: str = "") -> StateError:
    """``path`` cannot be resumed: the format found, the one written, the fix."""
    fresh = f"start over in {path.parent} with --fresh, or use a new --out"
    if found is None:
        return StateError(
            f"{path} has no format (written by sealong 0.1.0, before state.json had "
            f"one){why}; this sealong writes format {STATE_FORMAT} and resumes such "
            f"a file only when its settings and every record fit format "
            f"{STATE_FORMAT}: {fresh}"
        )
    return StateError(
        f"{path} has format {found!r}{why}, from another sealong; this one reads and "
        f"writes format {STATE_FORMAT}: resume it with the sealong that wrote it, "
        f"or {fresh}"
    )


@dataclass(frozen=True)
class State:
    """A state.json as read: its format (None: unversioned), settings, stages."""

    format: int | None
    settings: dict[str, Any]
    stages: dict[str, Stage]


def read_state(path: Path, kinds: Mapping[str, type[Record]] = ROUND_STAGES) -> State:
    """A ``state.json`` with typed stages; a file this version cannot resume
    raises :class:`StateError` naming the fix."""
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StateError(
            f"{path} is not JSON ({err}): start over with --fresh, or use a new --out"
        ) from None
    if not isinstance(raw, dict):
        raise format_error(path, None, f" and is a {type(raw).__name__}, not a map")
    found = raw.get("format")
    if found not in (None, STATE_FORMAT):
        raise format_error(path, found)
    stages: dict[str, Stage] = {}
    for name, entry in dict(raw.get("stages") or {}).items():
        try:
            stages[name] = _read_stage(name, entry, kinds)
        except (ValidationError, KeyError, TypeError, ValueError) as err:
            detail = _describe(err)
            if found is None:
                raise format_error(
                    path,
                    None,
                    f" and its stage {name} does not fit format {STATE_FORMAT} "
                    f"({detail})",
                ) from None
            raise StateError(
                f"{path}: stage {name} holds no valid record ({detail}): start over "
                "with --fresh, or use a new --out"
            ) from None
    return State(found, dict(raw.get("settings") or {}), stages)


def _read_stage(name: str, entry: Any, kinds: Mapping[str, type[Record]]) -> Stage:
    kind = stage_kind(name)
    if kind not in kinds:
        raise ValueError(f"no stage kind {kind!r} in this command")
    extra = set(entry) - {"seconds", "result", "from_run"}
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)}")
    return Stage(
        result=kinds[kind].model_validate(entry["result"]),
        seconds=float(entry["seconds"]),
        from_run=entry.get("from_run"),
    )


def _describe(err: Exception) -> str:
    if isinstance(err, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}"
            for e in err.errors()
        )
    if isinstance(err, KeyError):
        return f"no {err.args[0]!r}"
    return str(err)


def as_settings(settings: Any) -> dict[str, Any]:
    """Settings as state.json holds them (tuples become lists), so a resume
    compares like with like."""
    wanted = (
        dataclasses.asdict(settings)
        if dataclasses.is_dataclass(settings) and not isinstance(settings, type)
        else dict(settings)
    )
    return dict(json.loads(json.dumps(wanted)))


class Stages:
    """``OUT/state.json``: finished stages with their seconds and typed records.

    ``kinds``: the record of each stage kind this command runs (the rounds'
    by default; the demo adds its own).
    """

    def __init__(
        self,
        out: Path,
        settings: Any,
        fresh: bool,
        kinds: Mapping[str, type[Record]] = ROUND_STAGES,
    ) -> None:
        self.path = out / STATE_FILE
        self.kinds = dict(kinds)
        wanted = as_settings(settings)
        self.stages: dict[str, Stage] = {}
        if self.path.exists() and not fresh:
            state = read_state(self.path, self.kinds)
            old, self.stages = state.settings, state.stages
            missing = sorted(set(wanted) - set(old))
            if state.format is None and missing:
                raise format_error(
                    self.path, None, f" and its settings have no {', '.join(missing)}"
                )
            changed = {k: (old.get(k), v) for k, v in wanted.items() if old.get(k) != v}
            if changed:
                names = ", ".join(
                    f"{k} ({a!r} -> {b!r})" for k, (a, b) in changed.items()
                )
                raise ValueError(
                    f"{out} holds a run with other settings: {names}. Use another "
                    "--out, the recorded settings, or --fresh to start over"
                )
            if self.stages:
                LOG.info("resuming %s: finished stages %s", out, ", ".join(self))
        self.settings = wanted
        out.mkdir(parents=True, exist_ok=True)
        self._save()

    def _save(self) -> None:
        state = {
            "format": STATE_FORMAT,
            "settings": self.settings,
            "stages": {name: stage.to_json() for name, stage in self.stages.items()},
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.path)

    def __iter__(self) -> Iterator[str]:
        return iter(self.stages)

    def __contains__(self, name: object) -> bool:
        return name in self.stages

    def done(self, name: str, kind: type[R]) -> R | None:
        """The record of finished stage ``name`` (None: not finished)."""
        stage = self.stages.get(name)
        if stage is None:
            return None
        if not isinstance(stage.result, kind):
            raise TypeError(f"stage {name} holds a {type(stage.result).__name__}")
        return stage.result

    def run(self, name: str, fn: Callable[[], R]) -> R:
        """The stage's record: recorded earlier, else ``fn()``'s, then recorded."""
        expected = self.kinds.get(stage_kind(name))
        if expected is None:
            raise ValueError(f"stage {name}: no such kind of stage here")
        stage = self.stages.get(name)
        if stage is not None:
            LOG.info(
                "stage %s: done in an earlier run (%.0f s), skipped",
                name,
                stage.seconds,
            )
            return stage.result  # type: ignore[return-value]
        LOG.info("stage %s: starting", name)
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        if not isinstance(result, expected):
            raise TypeError(
                f"stage {name} returned a {type(result).__name__}, not a "
                f"{expected.__name__}"
            )
        self.stages[name] = Stage(result, round(seconds, 1))
        self._save()
        LOG.info("stage %s: finished in %.0f s", name, seconds)
        return result

    def adopt(
        self, other: Path, names: Sequence[str], theirs: Mapping[str, Stage]
    ) -> None:
        """Take finished stages of another run (``--from-run``), marked as such.

        ``theirs``: the stages of its state.json, as :func:`read_state` read them.
        """
        missing = [n for n in names if n not in theirs]
        if missing:
            raise ValueError(
                f"--from-run {other} has not finished stage(s) {', '.join(missing)}"
                ": finish that run first, or start from an earlier round"
            )
        for name in names:
            if name not in self.stages:
                self.stages[name] = dataclasses.replace(
                    theirs[name], from_run=str(other)
                )
        self._save()

    def seconds(self) -> dict[str, float]:
        """Seconds of the stages this run made (adopted ones are not its time)."""
        return {k: v.seconds for k, v in self.stages.items() if v.from_run is None}

    def adopted(self) -> list[str]:
        return sorted(k for k, v in self.stages.items() if v.from_run is not None)
