"""The rounds: label -> train -> merge -> eval, each stage recorded and resumable.

Round ``r`` labels questions with the model of round ``r-1`` (``axolotl
preprocess``: the plugin samples N outputs per question and MBR-labels them),
trains (``axolotl train``), folds a LoRA adapter into a plain model folder
(``merge_r``) and evaluates with the lm-eval tasks the user names (``eval_r``;
``eval_0`` is the model before training). The round policies
(:mod:`~axolotl_sealong.iterate.policy`) decide which questions, temperature,
pairs and starting model each round uses.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from axolotl_sealong.iterate import runs
from axolotl_sealong.iterate.commands import (
    EvalSettings,
    axolotl_cmd,
    lm_eval_cmd,
    merge_adapter,
    read_eval,
    run_logged,
)
from axolotl_sealong.iterate.policy import RoundPolicy, guard_steps
from axolotl_sealong.iterate.records import (
    EvalRecord,
    GuardRecord,
    LabelRecord,
    ModelRecord,
    QuestionsRecord,
    RoundPolicyRecord,
    RoundResult,
    Signals,
    StoppedRound,
    TrainRecord,
    UnionRecord,
)
from axolotl_sealong.iterate.state import Stages

LOG = logging.getLogger(__name__)

ADAPTERS = ("lora", "qlora")


@dataclass
class Model:
    """A round's model: a folder, plus an adapter applied on top of it."""

    path: Path
    adapter: Path | None = None


def read_pool(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the recipe's self-label entries, read by Axolotl's loader."""
    from axolotl.utils.dict import DictDefault

    from axolotl_sealong.integrations.axolotl.plugin import _read_questions

    return _read_questions(DictDefault(recipe))


def dataset_entry(path: Path, kind: str) -> dict[str, Any]:
    return {"path": str(path), "ds_type": "json", "split": "train", "type": kind}


class Iteration:
    """Rounds of label -> train -> merge -> eval over one recipe, in ``out``.

    ``pool(n)`` gives at least ``n`` question rows in a fixed order (fresh
    questions per round take consecutive slices of it); the default reads the
    recipe's self-label datasets.
    """

    def __init__(
        self,
        recipe: dict[str, Any],
        out: Path,
        stages: Stages,
        policy: RoundPolicy,
        evals: EvalSettings,
        *,
        pool: Callable[[int], list[dict[str, Any]]] | None = None,
        merge_dtype: str = "auto",
        launcher: str = "auto",
        resume_hint: str = "the same command",
    ) -> None:
        from axolotl_sealong.common.models import resolve_model
        from axolotl_sealong.integrations.axolotl.plugin import training_mode

        self.recipe = recipe
        self.out = out
        self.stages = stages
        self.policy = policy
        self.evals = evals
        self._pool = pool
        self._pool_rows: list[dict[str, Any]] | None = None
        self.merge_dtype = merge_dtype
        self.launcher = launcher
        self.resume_hint = resume_hint
        self.base = Path(resolve_model(str(recipe["base_model"])))
        self.mode = training_mode(recipe)
        self.lora = recipe.get("adapter") in ADAPTERS
        self._tokenizer: Any = None

    # -- helpers ---------------------------------------------------------- #
    def rdir(self, r: int) -> Path:
        return self.out / f"round{r}"

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.base)
        return self._tokenizer

    def pool_rows(self, n: int) -> list[dict[str, Any]]:
        if self._pool is not None:
            return self._pool(n)
        if self._pool_rows is None:
            self._pool_rows = read_pool(self.recipe)
        return self._pool_rows

    def check_pool(self, rounds: int) -> None:
        """Fresh questions: the pool must hold K x rounds rows, none reused."""
        k = self.policy.questions_per_round
        if not k:
            return
        have = len(self.pool_rows(k * rounds))
        if have < k * rounds:
            raise ValueError(
                f"--questions-per-round {k} for {rounds} round(s) needs {k * rounds} "
                f"questions, but the recipe's self-label datasets hold {have}: add "
                f"questions, lower --questions-per-round to {have // rounds} or "
                f"--rounds to {have // k}"
            )

    def trained(self, r: int) -> TrainRecord:
        rec = self.stages.done(f"train_{r}", TrainRecord)
        if rec is None:
            raise RuntimeError(f"round {r} has not trained yet")
        return rec

    def model_of(self, r: int) -> Model:
        """The model round ``r`` produced (0: the recipe's base model)."""
        if r == 0:
            return Model(self.base)
        merged = self.stages.done(f"merge_{r}", ModelRecord)
        if merged is not None:
            return Model(Path(merged.model))
        train = self.trained(r)
        folder = train.adapter if self.lora else train.model
        if folder is None:
            raise RuntimeError(
                f"round {r}'s train record names no "
                f"{'adapter' if self.lora else 'model'} (the recipe's adapter: "
                "setting changed?): rerun with --fresh"
            )
        if not self.lora:
            return Model(Path(folder))
        return Model(Path(train.base_model), Path(folder))

    # -- one round -------------------------------------------------------- #
    def questions(self, r: int) -> QuestionsRecord:
        """Round r's questions: a fresh slice of the pool, or the recipe's own."""
        from axolotl_sealong.common.rows import write_rows

        k = self.policy.questions_per_round
        if not k:
            return QuestionsRecord(fresh=False)
        rows = self.pool_rows(k * r)[(r - 1) * k : r * k]
        if len(rows) < k:
            raise ValueError(
                f"round {r} needs questions {(r - 1) * k}-{r * k - 1} of the pool, "
                f"which has {len(self.pool_rows(k * r))}"
            )
        path = write_rows(rows, self.rdir(r) / "questions.jsonl")
        LOG.info(
            "round %d: fresh questions %d-%d of the pool (%d) -> %s",
            r,
            (r - 1) * k,
            r * k - 1,
            len(rows),
            path,
        )
        return QuestionsRecord(fresh=True, path=str(path), first=(r - 1) * k, rows=k)

    def round_config(self, r: int, **over: Any) -> dict[str, Any]:
        """The recipe as round r runs it (sampling and training models, data)."""
        from axolotl_sealong.integrations.axolotl.args import (
            STRATEGY,
            self_label_entries,
        )

        cfg = dict(self.recipe)
        prev = self.model_of(r - 1)
        rdir = self.rdir(r)
        if r > 1:
            cfg["sealong_model"] = str(prev.path)
            cfg["sealong_adapter"] = str(prev.adapter) if prev.adapter else None
            # a recipe's own starting adapter belongs to round 1 only
            cfg["lora_model_dir"] = None
        if self.policy.train_from == "previous" and not prev.adapter:
            cfg["base_model"] = str(prev.path)
        else:
            cfg["base_model"] = str(self.base)
            if prev.adapter and self.policy.train_from == "previous":
                cfg["lora_model_dir"] = str(prev.adapter)
        q = self.stages.done(f"questions_{r}", QuestionsRecord)
        datasets = list(cfg.get("datasets") or [])
        if q is not None and q.fresh:
            entries = self_label_entries(cfg)
            keep = [d for d in datasets if d not in entries]
            datasets = [dataset_entry(Path(str(q.path)), STRATEGY), *keep]
        if self.policy.train_from == "base":
            datasets += [
                dataset_entry(Path(f), self.row_type) for f in self.union_paths(r)
            ]
        cfg["datasets"] = datasets
        cfg["output_dir"] = str(rdir / ("adapter" if self.lora else "model"))
        cfg["dataset_prepared_path"] = str(rdir / "prepared")
        cfg["sealong_output_dir"] = None
        cfg.update(over)
        return {k: v for k, v in cfg.items() if v is not None}

    @property
    def row_type(self) -> str:
        from axolotl_sealong.integrations.axolotl.plugin import ROW_TYPE

        return ROW_TYPE[self.mode]

    def union_files(self, r: int) -> list[str]:
        """Training rows of rounds 1..r-1 (ReST-EM: the base trains on them all)."""
        files = []
        for k in range(1, r):
            found = self.trained(k).train_file
            if not found:
                raise RuntimeError(f"round {k} recorded no training file")
            files.append(found)
        return files

    def union_paths(self, r: int) -> list[str]:
        """What round r trains on besides its own rows: the bounded union's file
        once ``union_r`` ran, else every older round's training file."""
        bounded = self.stages.done(f"union_{r}", UnionRecord)
        if bounded is None:
            return self.union_files(r)
        return [bounded.file] if bounded.rows else []

    def union(self, r: int, labels: Path, margin: float | None) -> UnionRecord:
        """Bounded union: older rounds' rows with the largest gaps, up to the cap
        (round r's own rows: those of ``labels`` with a gap of at least ``margin``)."""
        from axolotl_sealong.common.rows import read_rows, write_jsonl

        own = runs.own_rows(labels, self.mode, margin)
        budget = max(0, self.policy.union_max_rows - own)
        older = [
            (k, read_rows(f), runs.row_gaps(Path(self.trained(k).labels), self.mode))
            for k, f in enumerate(self.union_files(r), start=1)
        ]
        rows, stats = runs.pick_union(older, budget)
        path = write_jsonl(self.rdir(r) / "union.jsonl", rows)
        LOG.info(
            "round %d: bounded union: %d own row(s) + %d of the %d older rows "
            "(largest MBR gaps, >= %s; by round %s) -> %s",
            r,
            own,
            stats["rows"],
            stats["older_rows"],
            stats["min_gap"],
            stats["by_round"],
            path,
        )
        if stats["unmatched"]:
            LOG.warning(
                "round %d: %d older row(s) matched no scored row (ranked last)",
                r,
                stats["unmatched"],
            )
        return UnionRecord(file=str(path), own_rows=own, budget=budget, **stats)

    def write_config(
        self, r: int, name: str, **over: Any
    ) -> tuple[Path, dict[str, Any]]:
        """Write round r's config (``round_config(r, **over)``): its path and it."""
        path = self.rdir(r) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = self.round_config(r, **over)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path, cfg

    def guard(self, r: int) -> GuardRecord:
        """Diversity guard: probe the round's first questions, raise T if they agree."""
        from axolotl_sealong.core.config import LabelConfig

        start = float(
            self.recipe.get("sealong_temperature") or LabelConfig().temperature
        )
        if r == 1 or not self.policy.guard:
            return GuardRecord(temperature=start, probes=[])
        temperature, probes = guard_steps(
            start, self.policy, lambda t: self.probe(r, t), f"round {r}"
        )
        return GuardRecord(temperature=temperature, probes=probes)

    def probe(self, r: int, temperature: float) -> Signals:
        """Label the round's first questions at ``temperature``; their signals."""
        from axolotl.utils.dict import DictDefault

        from axolotl_sealong.core.pipeline import label
        from axolotl_sealong.integrations.axolotl.plugin import (
            _read_questions,
            label_settings,
        )

        cfg = DictDefault(self.round_config(r, sealong_temperature=temperature))
        label_cfg = label_settings(cfg).model_copy(
            update={"max_questions": self.policy.guard_probe_questions}
        )
        rows = _read_questions(cfg)
        folder = self.rdir(r) / f"probe_T{temperature:g}"
        LOG.info(
            "round %d: guard probe, %d question(s) at T=%.2f -> %s",
            r,
            min(len(rows), self.policy.guard_probe_questions),
            temperature,
            folder,
        )
        label(label_cfg, rows, folder, progress=False)
        return runs.signals(folder)

    def label(self, r: int, temperature: float) -> LabelRecord:
        """``axolotl preprocess``: the plugin samples and MBR-labels the round."""
        from axolotl_sealong.common.rows import read_rows
        from axolotl_sealong.core.pipeline import SCORED_FILE

        rdir = self.rdir(r)
        self.write_config(r, "label.yml", sealong_temperature=temperature)
        cmd = axolotl_cmd("preprocess", rdir / "label.yml")
        log = self.out / "logs" / f"label_{r}.log"
        run_logged(cmd, log, f"label_{r}", self.resume_hint)
        folder = runs.labeled_dir(rdir)
        scored = read_rows(folder / SCORED_FILE)
        quantile = self.policy.margin_quantile
        margin = runs.margin_threshold(scored, quantile) if quantile and r > 1 else None
        rec = runs.label_record(
            folder,
            scored,
            self.tokenizer,
            command=shlex.join(cmd),
            temperature=temperature,
            margin=margin,
        )
        runs.log_signals(r, rec)
        if margin is not None:
            LOG.info(
                "round %d: margin filter keeps pairs with gap >= %.4f (the %.2f "
                "quantile of %d pairs)",
                r,
                margin,
                quantile,
                rec.pairs,
            )
        return rec

    def train(self, r: int, labeled: LabelRecord, temperature: float) -> TrainRecord:
        """``axolotl train`` on the round's labels (and the union, from the base)."""
        over: dict[str, Any] = {"sealong_temperature": temperature}
        if labeled.margin is not None:
            over["sealong_margin"] = labeled.margin
        # the config read below: base_model and output_dir, which ``over``
        # (temperature, margin) leaves alone
        config, cfg = self.write_config(r, "train.yml", **over)
        before = runs.labeled_dirs(self.rdir(r))
        cmd = axolotl_cmd("train", config, self.launcher)
        log = self.out / "logs" / f"train_{r}.log"
        run_logged(cmd, log, f"train_{r}", self.resume_hint)
        folder = runs.labeled_dir(self.rdir(r), before)
        files = sorted(folder.glob(f"train_{self.mode}_*.jsonl"))
        union = self.union_paths(r) if self.policy.train_from == "base" else []
        key = "adapter" if self.lora else "model"
        return TrainRecord(
            command=shlex.join(cmd),
            base_model=cfg["base_model"],
            labels=str(folder),
            train_file=str(files[-1]) if files else None,
            training_rows=len(files[-1].read_text().splitlines()) if files else None,
            union_files=union,
            union_rows=sum(len(Path(f).read_text().splitlines()) for f in union),
            **{key: cfg["output_dir"]},
        )

    def run_round(self, r: int) -> RoundResult | StoppedRound:
        questions = self.stages.run(f"questions_{r}", lambda: self.questions(r))
        guard = self.stages.run(f"guard_{r}", lambda: self.guard(r))
        temperature = guard.temperature
        stop = self.stop_reason(guard)
        if stop:
            LOG.warning(
                "round %d: stopped before labeling (%s): the result is round %d's "
                "model",
                r,
                stop,
                r - 1,
            )
            return StoppedRound(round=r, stopped=stop, result_round=r - 1, policy=guard)
        labeled = self.stages.run(f"label_{r}", lambda: self.label(r, temperature))
        union = None
        if self.policy.union_max_rows and self.policy.train_from == "base" and r > 1:
            union = self.stages.run(
                f"union_{r}",
                lambda: self.union(r, Path(labeled.folder), labeled.margin),
            )
        trained = self.stages.run(
            f"train_{r}", lambda: self.train(r, labeled, temperature)
        )
        if self.lora and self.policy.sample_with == "merged":
            self.stages.run(
                f"merge_{r}",
                lambda: merge_adapter(
                    Path(trained.base_model),
                    Path(str(trained.adapter)),
                    self.rdir(r) / "model",
                    self.merge_dtype,
                ),
            )
        return RoundResult(
            round=r,
            sampled_by="base model" if r == 1 else f"round {r - 1} model",
            policy=RoundPolicyRecord(
                temperature=temperature,
                probes=guard.probes,
                margin=labeled.margin,
                questions=questions,
                train_from=self.policy.train_from,
                training_rows=trained.training_rows,
                union_rows=trained.union_rows,
                union=union,
            ),
            label=labeled,
        )

    def stop_reason(self, guard: GuardRecord) -> str | None:
        """Early stop: the guard ended at its cap with the probe still tripping."""
        probes = guard.probes
        if not (self.policy.stop_at_guard_cap and probes and probes[-1].trips):
            return None
        return f"guard at its cap T={guard.temperature:g} and still " + "; ".join(
            probes[-1].trips
        )

    def evaluate(self, r: int) -> EvalRecord:
        name = f"eval_{r}"
        model = self.model_of(r)
        folder = self.out / "eval" / name
        cmd = lm_eval_cmd(model.path, model.adapter, folder, self.evals)
        run_logged(cmd, self.out / "logs" / f"{name}.log", name, self.resume_hint)
        return EvalRecord(
            tasks=read_eval(folder, self.evals.tasks, self.evals.metric),
            command=shlex.join(cmd),
            model=str(model.path),
            adapter=str(model.adapter) if model.adapter else None,
        )

    def run(
        self, rounds: int
    ) -> tuple[list[EvalRecord], list[RoundResult | StoppedRound]]:
        """Every stage up to ``rounds`` (finished ones skipped): evals and rounds."""
        self.check_pool(rounds)
        evals = []
        if self.evals.tasks:
            evals.append(self.stages.run("eval_0", lambda: self.evaluate(0)))
        results: list[RoundResult | StoppedRound] = []
        for r in range(1, rounds + 1):
            results.append(self.run_round(r))
            if isinstance(results[-1], StoppedRound):
                break
            if self.evals.tasks:
                evals.append(
                    self.stages.run(f"eval_{r}", lambda: self.evaluate(r))  # noqa: B023
                )
        return evals, results
