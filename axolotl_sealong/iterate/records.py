"""What each stage of a run records in ``OUT/state.json``, and a round's result.

Every stage returns one of these records; :mod:`~axolotl_sealong.iterate.state`
writes it under the stage's name and reads it back typed, so a record written
without a field the loop needs fails when the file is read, not rounds later.
A record is written as it was made: a field left at its default when the
record was built is not written (``exclude_unset``), so reading a record back
and writing it again gives the same JSON.

The numbers the core computes about a labels folder (the gold diagnostics, the
counts, MBR pick by N, pairs by gap) keep the core's own shapes, as mappings.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """A stage's record: frozen, no unknown keys, written as it was made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


# -- label-free signals and the diversity guard ------------------------------- #
class Signals(Record):
    """``core.diagnostics.label_free_signals``: how much the samples agree.

    Only ``questions`` when there were none to measure.
    """

    questions: int
    identical_share: float | None = None
    mean_similarity: float | None = None
    distinct_samples: float | None = None
    pairs: int | None = None
    gap: dict[str, float] = Field(default_factory=dict)
    gap_paired: dict[str, float] = Field(default_factory=dict)


class Probe(Record):
    """One guard probe: the temperature tried, its signals, why it tripped."""

    temperature: float
    trips: list[str]
    questions: int
    identical_share: float | None = None
    mean_similarity: float | None = None
    distinct_samples: float | None = None
    pairs: int | None = None
    gap: dict[str, float] = Field(default_factory=dict)
    gap_paired: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def of(cls, temperature: float, trips: list[str], signals: Signals) -> Probe:
        return cls(temperature=temperature, trips=trips, **signals.to_json())


# -- the stages of a round ----------------------------------------------------- #
class QuestionsRecord(Record):
    """``questions_r``: fresh questions (rows [first, first + rows) of the pool
    written to ``path``), or the recipe's own (``fresh`` false, nothing else)."""

    fresh: bool
    path: str | None = None
    first: int | None = None
    rows: int | None = None


class GuardRecord(Record):
    """``guard_r``: the temperature the round samples at, and the probes behind it."""

    temperature: float
    probes: list[Probe]


class ScoreDistribution(Record):
    """MBR scores of every live sample, and of the chosen and rejected ones."""

    all: list[float]
    chosen: list[float]
    rejected: list[float]


class LabelRecord(Record):
    """``label_r``: ``axolotl preprocess`` and what its labels folder says."""

    command: str
    temperature: float
    margin: float | None
    folder: str
    diagnostics: dict[str, Any]
    signals: Signals
    pairs_by_gap: list[dict[str, Any]]
    pick_by_n: list[dict[str, Any]]
    counts: dict[str, Any]
    pairs: int
    score_distribution: ScoreDistribution
    mean_margin: float
    lengths: dict[str, float]
    label_seconds: dict[str, Any]


class UnionRecord(Record):
    """``union_r``: the older rounds' rows round r trains on (bounded union)."""

    file: str
    own_rows: int
    budget: int
    rows: int
    older_rows: int
    by_round: dict[str, int]
    min_gap: float | None
    unmatched: int


class TrainRecord(Record):
    """``train_r``: ``axolotl train``; ``adapter`` (LoRA) or ``model`` (full)."""

    command: str
    base_model: str
    labels: str
    train_file: str | None
    training_rows: int | None
    union_files: list[str]
    union_rows: int
    adapter: str | None = None
    model: str | None = None


class ModelRecord(Record):
    """A model folder: ``merge_r`` (the LoRA folded in), the demo's ``model``."""

    model: str


class TaskScores(Record):
    """One lm-eval task's per-question scores, ordered by ``doc_id``."""

    doc_ids: list[int]
    scores: list[float]
    output_tokens: list[float]
    samples_file: str


class EvalRecord(Record):
    """``eval_r``: lm-eval on round r's model (0: before training)."""

    tasks: dict[str, TaskScores]
    command: str
    model: str
    adapter: str | None


# -- what a round gives the report (built from the records, not stored) -------- #
class RoundPolicyRecord(Record):
    """What the round policies decided for a round (``rounds[].policy``)."""

    temperature: float
    probes: list[Probe]
    margin: float | None
    questions: QuestionsRecord | None
    train_from: str
    training_rows: int | None
    union_rows: int | None
    union: UnionRecord | None


class RoundResult(Record):
    """A round that labeled and trained."""

    round: int
    sampled_by: str
    policy: RoundPolicyRecord
    label: LabelRecord

    def report_json(self) -> dict[str, Any]:
        """``report.json``'s ``rounds[]`` entry (no score lists: they are plotted)."""
        label = self.label.to_json()
        label.pop("score_distribution", None)
        return {
            "round": self.round,
            "sampled_by": self.sampled_by,
            "policy": self.policy.to_json(),
            **label,
        }


class StoppedRound(Record):
    """A round the early stop ended before it labeled (``report.json``'s
    ``stopped``): the result is round ``result_round``'s model."""

    round: int
    stopped: str
    result_round: int
    policy: GuardRecord

    def report_json(self) -> dict[str, Any]:
        return self.to_json()
