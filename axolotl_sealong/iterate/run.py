"""``sealong iterate``: check everything, then run or resume every stage.

Everything is checked before any model loads: the run's flags, the recipe
(the plugin, a self-label datasets entry, every ``sealong_*`` key), the pool's
size for fresh questions. Every finished stage is recorded in
``OUT/state.json`` (:mod:`~axolotl_sealong.iterate.state`): a killed run
resumes at the first unfinished stage, and ``--rounds 3`` after a 2-round run
only runs round 3. ``--from-run A --from-round R`` takes ``eval_0`` and rounds
1..R-1 from run A, which must differ only in its round policies.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from axolotl_sealong.iterate import plots
from axolotl_sealong.iterate.commands import EvalSettings
from axolotl_sealong.iterate.loop import ADAPTERS, Iteration
from axolotl_sealong.iterate.policy import RoundPolicy
from axolotl_sealong.iterate.report import build_report
from axolotl_sealong.iterate.state import (
    ROUND_STAGES,
    STATE_FILE,
    Stages,
    read_state,
)

LOG = logging.getLogger(__name__)

PLUGIN = "axolotl_sealong.SeaLongPlugin"
MERGE_DTYPES = ("auto", "float32", "bfloat16", "float16")
LAUNCHERS = ("auto", "python", "accelerate")
# the kinds of stage a round runs before its eval, in order
ROUND_KINDS = tuple(kind for kind in ROUND_STAGES if kind != "eval")


def load_recipe(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"--config {path}: not an Axolotl YAML mapping")
    return cfg


def check_recipe(recipe: dict[str, Any], policy: RoundPolicy) -> None:
    """What iterate needs from a recipe, checked before any model loads."""
    from axolotl_sealong.core.config import LabelConfig
    from axolotl_sealong.integrations.axolotl.args import STRATEGY, self_label_entries

    if PLUGIN not in (recipe.get("plugins") or []):
        raise ValueError(
            f"the recipe has no `plugins: [{PLUGIN}]`: sealong iterate labels "
            "through the plugin; add it (see sealong recipes list)"
        )
    if not self_label_entries(recipe):
        raise ValueError(
            f"the recipe has no datasets: entry of type {STRATEGY}: "
            "that entry holds the questions each round labels"
        )
    if not recipe.get("base_model"):
        raise ValueError("the recipe has no base_model")
    LabelConfig.from_yaml_dict(recipe)  # every sealong_* key, before any work
    if policy.sample_with == "adapter" and recipe.get("adapter") not in ADAPTERS:
        raise ValueError(
            f"--sample-with adapter needs a LoRA recipe (adapter: lora or qlora; this "
            f"one has adapter: {recipe.get('adapter')!r}): use --sample-with merged"
        )


def _one_of(flag: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{flag} {value!r}: use one of {', '.join(valid)}")


def check_run_args(
    rounds: int,
    merge_dtype: str,
    launcher: str,
    from_run: Path | None,
    from_round: int,
) -> None:
    """The run's own flags (the policy checked itself when it was built)."""
    if rounds < 1:
        raise ValueError(f"--rounds {rounds}: must be >= 1")
    _one_of("--merge-dtype", merge_dtype, MERGE_DTYPES)
    _one_of("--launcher", launcher, LAUNCHERS)
    if (from_run is None) != (from_round == 0):
        raise ValueError(
            "--from-run and --from-round go together: --from-run DIR --from-round R "
            "takes eval_0 and rounds 1..R-1 from DIR"
        )
    if from_run is not None and not 2 <= from_round <= rounds:
        raise ValueError(
            f"--from-round {from_round}: must be in 2..--rounds ({rounds}); round 1 "
            "and earlier come from --from-run"
        )


def adopt_rounds(
    stages: Stages, other: Path, from_round: int, with_eval: bool, it: Iteration
) -> None:
    """``--from-run A --from-round R``: rounds < R (and eval_0) come from run A.

    Only the policies may differ between the two runs: they decide rounds >= R.
    """
    other = other.resolve()
    if not (other / STATE_FILE).is_file():
        raise FileNotFoundError(f"--from-run {other}: no {STATE_FILE} there")
    theirs = read_state(other / STATE_FILE, stages.kinds)
    mine = stages.settings
    policy_keys = set(RoundPolicy.model_fields)
    differ = sorted(
        k for k in set(mine) | set(theirs.settings)
        if k not in policy_keys and mine.get(k) != theirs.settings.get(k)
    )  # fmt: skip
    if differ:
        raise ValueError(
            f"--from-run {other} was made with other settings ({', '.join(differ)}); "
            "only the round policies may differ"
        )
    names = ["eval_0"] if with_eval else []
    merged = it.lora and it.policy.sample_with == "merged"
    for r in range(1, from_round):
        names += [f"{s}_{r}" for s in ROUND_KINDS if f"{s}_{r}" in theirs.stages]
        # a round counts only whole: its labels, its training, its model
        names += [f"label_{r}", f"train_{r}"] + ([f"merge_{r}"] if merged else [])
        names += [f"eval_{r}"] if with_eval else []
    names = list(dict.fromkeys(names))
    stages.adopt(other, names, theirs.stages)
    LOG.info("adopted %s from %s", ", ".join(names), other)


def run_iterate(
    config: Path,
    out: Path,
    policy: RoundPolicy,
    evals: EvalSettings,
    *,
    rounds: int,
    fresh: bool = False,
    from_run: Path | None = None,
    from_round: int = 0,
    merge_dtype: str = "auto",
    launcher: str = "auto",
    command: str = "sealong iterate",
) -> dict[str, Any]:
    """``sealong iterate``: check everything, then run or resume every stage."""
    recipe = load_recipe(config)
    check_run_args(rounds, merge_dtype, launcher, from_run, from_round)
    check_recipe(recipe, policy)
    plots.check_plotting()
    out = out.resolve()
    settings = {
        "recipe": recipe,
        **policy.settings(),
        "eval": dataclasses.asdict(evals),
        "merge_dtype": merge_dtype,
    }
    if fresh and out.exists():
        (out / STATE_FILE).unlink(missing_ok=True)
    stages = Stages(out, settings, fresh)
    it = Iteration(
        recipe,
        out,
        stages,
        policy,
        evals,
        merge_dtype=merge_dtype,
        launcher=launcher,
        resume_hint=command,
    )
    if from_run is not None:
        adopt_rounds(stages, from_run, from_round, bool(evals.tasks), it)
    t0 = time.perf_counter()
    eval_records, results = it.run(rounds)
    report = build_report(
        out,
        kind="iterate",
        evals=eval_records,
        rounds=results,
        stages=stages,
        command=command,
        extra={"recipe_path": str(config), "base_model": str(it.base)},
        title="evaluation",
    )
    LOG.info("iterate finished in %.0f s (this invocation)", time.perf_counter() - t0)
    return report
