"""The round policies: how round ``r`` differs from a plain repeat of round 1.

The paper stops after one round. Repeating it on the same questions undid the
first round on the CPU demo (README): the round-1 model had learned its own
answers to those questions, its samples agreed (56 of 128 questions gave 8
identical samples), and the pairs left were near-random. The policies are what
published iterative self-training does about it: fresh questions each round, a
label-free diversity guard on the sampling temperature, a pair filter by MBR
margin, training from the base model on the union of all rounds' pairs
(optionally bounded to the largest-gap rows) instead of continuing from the
last round, and an early stop when the guard at its cap still finds the
samples agreeing too much.

Each field of :class:`RoundPolicy` is a flag of ``sealong iterate`` and
``sealong demo`` (``--questions-per-round``, ...); its description is that
flag's help (``cli/iterate.py`` builds the flags from the fields), and a bad
value fails when the policy is built, naming the flag, the value and the fix.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from axolotl_sealong.iterate.records import Probe, Signals

LOG = logging.getLogger(__name__)


def flag(name: str) -> str:
    """A field's command-line flag: ``train_from`` -> ``--train-from``."""
    return "--" + name.replace("_", "-")


class RoundPolicy(BaseModel):
    """How rounds differ from a plain repeat of round 1; each field is a setting.

    The defaults repeat the paper's round (every policy off).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    questions_per_round: int = Field(
        0,
        description="fresh questions: round r labels rows [(r-1)K, rK) of the "
        "question pool, so no question is labeled twice (Iterative RPO, ScPO); 0: "
        "every round labels the recipe's questions again (the paper's single "
        "round, repeated)",
    )
    train_from: Literal["previous", "base"] = Field(
        "previous",
        description="previous: round r trains the model of round r-1 on its own "
        "pairs; base: round r trains the base model on the union of the pairs of "
        "rounds 1..r (ReST-EM)",
    )
    sample_with: Literal["merged", "adapter"] = Field(
        "merged",
        description="how round r samples with the model of round r-1: merged (the "
        "LoRA folded into a plain model folder) or adapter (base + adapter, nothing "
        "merged; with train_from previous the next round keeps training that "
        "adapter)",
    )
    guard_identical_share: float = Field(
        0.0,
        description="diversity guard, from round 2: when more than this share of "
        "the probe's questions gave N identical samples, sample the round at a "
        "higher temperature (0: off)",
    )
    guard_mean_similarity: float = Field(
        0.0,
        description="diversity guard, from round 2: when the probe's mean pairwise "
        "similarity of samples (the mean MBR score) is above this, sample the round "
        "at a higher temperature (0: off)",
    )
    guard_probe_questions: int = Field(
        32,
        description="diversity guard: questions (the round's first) sampled to "
        "measure the agreement before the round is labeled",
    )
    guard_temperature_step: float = Field(
        0.2, description="diversity guard: temperature added per step"
    )
    guard_max_temperature: float = Field(
        1.0, description="diversity guard: the highest temperature it may set"
    )
    margin_quantile: float = Field(
        0.0,
        description="pair filter, from round 2 (round 1 is the paper's method, "
        "every pair): drop the pairs whose best-worst MBR score gap is below this "
        "quantile of that round's gaps (0: off; 0.5 keeps the more decided half)",
    )
    union_max_rows: int = Field(
        0,
        description="bounded union, with train_from base: round r trains on its "
        "own pairs plus the older rounds' pairs with the largest MBR gaps, up to "
        "this many rows in all (the round's own pairs always train; 0: the whole "
        "union, which grows every round and with it the training time)",
    )
    stop_at_guard_cap: bool = Field(
        False,
        description="early stop: when the diversity guard is at its cap and the "
        "probe still trips, the iteration ends before that round labels or trains; "
        "the last trained round's model is the result (Meta-Rewarding, SRT: "
        "self-training collapses without early stopping)",
    )

    def __init__(self, **values: Any) -> None:
        """Bad values fail here, before any model loads: one line per problem."""
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ValueError(describe_policy_error(err)) from None

    # -- one field at a time ------------------------------------------------ #
    @field_validator("questions_per_round")
    @classmethod
    def _questions(cls, value: int) -> int:
        if value < 0:
            raise ValueError(
                f"--questions-per-round {value}: must be >= 0 (K fresh questions per "
                "round, or 0 to label the same questions every round)"
            )
        return value

    @field_validator("guard_identical_share", "guard_mean_similarity")
    @classmethod
    def _share(cls, value: float, info: ValidationInfo) -> float:
        if not 0 <= value < 1:
            raise ValueError(
                f"{flag(str(info.field_name))} {value}: must be in [0, 1) (0 turns "
                "it off; e.g. 0.25)"
            )
        return value

    @field_validator("margin_quantile")
    @classmethod
    def _margin(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(
                f"--margin-quantile {value}: must be in [0, 1) (0 keeps every pair; "
                "0.5 drops the half with the smaller MBR margin)"
            )
        return value

    @field_validator("union_max_rows")
    @classmethod
    def _union_rows(cls, value: int) -> int:
        if value < 0:
            raise ValueError(
                f"--union-max-rows {value}: must be >= 0 (0: the whole union; e.g. 128)"
            )
        return value

    # -- across fields ---------------------------------------------------------- #
    @model_validator(mode="after")
    def _together(self) -> RoundPolicy:
        if self.union_max_rows and self.train_from != "base":
            raise ValueError(
                f"--union-max-rows {self.union_max_rows} bounds the union of the "
                f"rounds' pairs, which only --train-from base trains on (it is "
                f"{self.train_from!r}): add --train-from base or drop the flag"
            )
        if self.stop_at_guard_cap and not self.guard:
            raise ValueError(
                "--stop-at-guard-cap needs the diversity guard: set "
                "--guard-identical-share (e.g. 0.2) or --guard-mean-similarity"
            )
        if not self.guard:
            return self
        if self.guard_probe_questions < 4:
            raise ValueError(
                f"--guard-probe-questions {self.guard_probe_questions}: must be >= 4 "
                "(the guard measures a share of questions; e.g. 32)"
            )
        if self.guard_temperature_step <= 0:
            raise ValueError(
                f"--guard-temperature-step {self.guard_temperature_step}: must be > 0 "
                "(e.g. 0.2)"
            )
        if self.guard_max_temperature <= 0:
            raise ValueError(
                f"--guard-max-temperature {self.guard_max_temperature}: must be > 0 "
                "(e.g. 1.0)"
            )
        return self

    # -- use ------------------------------------------------------------------- #
    @property
    def guard(self) -> bool:
        return self.guard_identical_share > 0 or self.guard_mean_similarity > 0

    def replace(self, **changes: Any) -> RoundPolicy:
        """A copy with ``changes``, checked like any policy."""
        return RoundPolicy(**{**self.model_dump(), **changes})

    def settings(self) -> dict[str, Any]:
        """The fields as ``state.json`` and ``report.json`` record them."""
        return self.model_dump(mode="json")

    def trips(self, signals: Signals) -> list[str]:
        """The guard's reasons to raise the temperature (empty: keep it)."""
        reasons = []
        share, sim = signals.identical_share, signals.mean_similarity
        limit = self.guard_identical_share
        if limit and share is not None and share > limit:
            reasons.append(f"identical share {share:.3f} > {limit}")
        if self.guard_mean_similarity and sim and sim > self.guard_mean_similarity:
            reasons.append(f"mean similarity {sim:.4f} > {self.guard_mean_similarity}")
        return reasons


def choices(name: str) -> tuple[Any, ...]:
    """The values a ``Literal`` field of :class:`RoundPolicy` takes (else empty)."""
    annotation = RoundPolicy.model_fields[name].annotation
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return ()


def describe_policy_error(err: ValidationError) -> str:
    """Pydantic's errors as flags: ``--train-from 'x': use one of previous, base``.

    The validators above already write flag, value and fix; pydantic's own
    checks (a word where a number goes, a value not among the choices, an
    unknown policy) get the same form here.
    """
    lines = []
    for item in err.errors():
        msg = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "value_error" or not item["loc"]:
            lines.append(msg)
            continue
        name = str(item["loc"][0])
        if item["type"] == "extra_forbidden":
            lines.append(
                f"{name}: no such round policy (the policies: "
                f"{', '.join(RoundPolicy.model_fields)})"
            )
        elif item["type"] == "literal_error":
            lines.append(
                f"{flag(name)} {item['input']!r}: use one of "
                f"{', '.join(map(str, choices(name)))}"
            )
        else:
            lines.append(f"{flag(name)} {item['input']!r}: {msg}")
    return "; ".join(lines)


def guard_steps(
    start: float,
    policy: RoundPolicy,
    measure: Callable[[float], Signals],
    where: str = "",
) -> tuple[float, list[Probe]]:
    """Raise the temperature by steps while the samples agree too much, to the cap.

    ``measure(T)`` labels the probe questions at T and returns their
    label-free signals; every probe is kept for the report.
    """
    temperature, probes = start, []
    cap = max(policy.guard_max_temperature, start)
    while True:
        signals = measure(temperature)
        reasons = policy.trips(signals)
        probes.append(Probe.of(temperature, reasons, signals))
        if not reasons:
            LOG.info(
                "%s: guard keeps T=%.2f (%s)", where, temperature, signals.to_json()
            )
            return temperature, probes
        if temperature >= cap:
            LOG.warning(
                "%s: guard at its cap T=%.2f and still %s",
                where,
                temperature,
                "; ".join(reasons),
            )
            return temperature, probes
        new = round(min(cap, temperature + policy.guard_temperature_step), 4)
        LOG.info(
            "%s: guard raises T %.2f -> %.2f: %s",
            where,
            temperature,
            new,
            "; ".join(reasons),
        )
        temperature = new
