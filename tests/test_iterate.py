"""``sealong iterate``: policies, signals, round configs, stages, a real tiny run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from builders import ORPO, river_rows, training_recipe, write_jsonl

from axolotl_sealong.core.diagnostics import label_free_signals, pairs_by_gap
from axolotl_sealong.iterate import markdown, runs
from axolotl_sealong.iterate.commands import EvalSettings, read_eval
from axolotl_sealong.iterate.loop import Iteration
from axolotl_sealong.iterate.policy import RoundPolicy, guard_steps
from axolotl_sealong.iterate.records import (
    EvalRecord,
    GuardRecord,
    LabelRecord,
    ModelRecord,
    Probe,
    QuestionsRecord,
    RoundPolicyRecord,
    RoundResult,
    ScoreDistribution,
    Signals,
    StoppedRound,
    TaskScores,
    TrainRecord,
)
from axolotl_sealong.iterate.report import build_report
from axolotl_sealong.iterate.run import adopt_rounds, check_run_args
from axolotl_sealong.iterate.state import STATE_FORMAT, Stages, StateError

ROOT = Path(__file__).resolve().parents[1]
UNVERSIONED_STATE = ROOT / "tests" / "data" / "state_unversioned_iterate.json"


# --------------------------------------------------------------------------- #
# Settings: bad values fail before any work, naming the field and the fix
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"train_from": "scratch"},
            "--train-from 'scratch': use one of previous, base",
        ),
        ({"sample_with": "lora"}, "--sample-with 'lora': use one of merged, adapter"),
        ({"questions_per_round": -1}, "--questions-per-round -1: must be >= 0"),
        ({"guard_identical_share": 1.5}, r"--guard-identical-share 1.5: .*\[0, 1\)"),
        ({"guard_mean_similarity": -0.1}, "--guard-mean-similarity -0.1"),
        ({"margin_quantile": 1.0}, r"--margin-quantile 1.0: must be in \[0, 1\)"),
        (
            {"guard_identical_share": 0.25, "guard_probe_questions": 2},
            "--guard-probe-questions 2: must be >= 4",
        ),
        (
            {"guard_mean_similarity": 0.9, "guard_temperature_step": 0.0},
            "--guard-temperature-step 0.0: must be > 0",
        ),
        ({"union_max_rows": -1}, "--union-max-rows -1: must be >= 0"),
        (
            {"union_max_rows": 128},
            "--union-max-rows 128 bounds .*'previous'.*add --train-from base",
        ),
        ({"stop_at_guard_cap": True}, "--stop-at-guard-cap needs the diversity guard"),
    ],
)
def test_bad_policies_fail_before_work(change: dict, message: str) -> None:
    """The policy checks itself when it is built: one plain line, no pydantic dump."""
    with pytest.raises(ValueError, match=message) as err:
        RoundPolicy(**change)
    assert type(err.value) is ValueError
    assert "validation error" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"guard_temperature_step": float("nan"), "guard_mean_similarity": 0.5},
         "--guard-temperature-step nan: .*finite"),
        ({"questions_per_round": "many"}, "--questions-per-round 'many': .*integer"),
        ({"stop_at_guard": True}, "stop_at_guard: no such round policy"),
        ({"train_from": "x", "union_max_rows": -2},
         "--train-from 'x': use one of previous, base; --union-max-rows -2"),
    ],
)  # fmt: skip
def test_pydantic_errors_name_the_flag_and_the_value(
    change: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RoundPolicy(**change)


def test_replace_checks_like_building() -> None:
    assert RoundPolicy().replace(questions_per_round=8).questions_per_round == 8
    with pytest.raises(ValueError, match="--questions-per-round -1"):
        RoundPolicy().replace(questions_per_round=-1)


def test_policy_flags_are_the_fields_with_their_descriptions() -> None:
    """sealong iterate and sealong demo: one flag per field, help = description."""
    import argparse

    from axolotl_sealong.cli.iterate import add_policy_flags, policy_from_args

    parser = argparse.ArgumentParser()
    defaults = RoundPolicy(guard_identical_share=0.2, stop_at_guard_cap=True)
    add_policy_flags(parser, defaults)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert list(actions) == list(RoundPolicy.model_fields)
    for name, field in RoundPolicy.model_fields.items():
        assert field.description, f"{name} has no description (its --help)"
        assert actions[name].help == (
            f"{field.description} (default: {getattr(defaults, name)})"
        )
        assert actions[name].default == getattr(defaults, name)
    assert actions["train_from"].metavar == "{previous,base}"
    args = parser.parse_args(
        ["--no-stop-at-guard-cap", "--train-from", "base", "--union-max-rows", "9"]
    )
    policy = policy_from_args(args)
    assert (policy.stop_at_guard_cap, policy.union_max_rows) == (False, 9)
    assert policy.guard_identical_share == 0.2  # the given defaults
    with pytest.raises(ValueError, match="--train-from 'scratch': use one of"):
        policy_from_args(parser.parse_args(["--train-from", "scratch"]))


def test_run_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="--rounds 0: must be >= 1"):
        check_run_args(0, "auto", "auto", None, 0)
    with pytest.raises(ValueError, match="--merge-dtype 'fp8'"):
        check_run_args(1, "fp8", "auto", None, 0)
    with pytest.raises(ValueError, match="--from-run and --from-round go together"):
        check_run_args(2, "auto", "auto", Path("x"), 0)
    with pytest.raises(ValueError, match="--from-round 3: must be in 2..--rounds"):
        check_run_args(2, "auto", "auto", Path("x"), 3)


def _recipe(tmp: Path, model: Path, n_questions: int = 8, **extra: Any) -> dict:
    questions = write_jsonl(tmp / "questions.jsonl", river_rows(n_questions))
    return (
        training_recipe(
            tmp,
            model,
            questions,
            sealong_num_samples=3,
            sealong_max_new_tokens=12,
            sealong_sampler="hf",
            **ORPO,
            dataset_prepared_path=str(tmp / "ignored_prepared"),
            output_dir=str(tmp / "ignored_out"),
        )
        | extra
    )


# --------------------------------------------------------------------------- #
# Label-free signals and the guard
# --------------------------------------------------------------------------- #
def _scored(
    samples: list[str], scores: list[float], paired: bool, **extra: Any
) -> dict:
    return {
        "samples": samples,
        "scores": scores,
        "chosen": 0,
        "rejected": 1 if paired else None,
        "gap": max(scores) - min(scores),
        **extra,
    }


def test_label_free_signals() -> None:
    rows = [
        _scored(["a", "a ", "a"], [1.0, 1.0, 1.0], False),  # identical once stripped
        _scored(["a", "b", "c"], [0.5, 0.4, 0.3], True),
        _scored(["x", "x", "y"], [0.8, 0.8, 0.6], True),
        _scored(["p", "q", "q"], [0.7, 0.9, 0.9], True),
    ]
    sig = label_free_signals(rows)
    assert sig["questions"] == 4 and sig["pairs"] == 3
    assert sig["identical_share"] == 0.25
    # the mean MBR score is the mean pairwise similarity of the samples
    assert sig["mean_similarity"] == pytest.approx(
        (1.0 + 0.4 + 2.2 / 3 + 2.5 / 3) / 4, abs=1e-4
    )
    assert sig["distinct_samples"] == pytest.approx((1 + 3 + 2 + 2) / 4)
    assert sig["gap"]["p50"] == pytest.approx(0.2) and sig["gap"][
        "mean"
    ] == pytest.approx(0.15)
    assert sig["gap_paired"]["p50"] == pytest.approx(0.2)
    assert label_free_signals([]) == {"questions": 0}
    # a blank sample has no score (None): the mean is over the scored ones
    blank = {"samples": ["a", "", "b"], "scores": [0.6, None, 0.4], "gap": 0.2}
    assert label_free_signals([blank])["mean_similarity"] == pytest.approx(0.5)


def test_pairs_by_gap_splits_small_and_large_gaps() -> None:
    rows = [
        _scored(["Kel2", "no"], [0.9, 0.8], True, answers=["Kel2"]),  # gap 0.1
        _scored(["no", "Kel2"], [0.9, 0.7], True, answers=["Kel2"]),  # gap 0.2
        _scored(["Kel2", "no"], [0.9, 0.3], True, answers=["Kel2"]),  # gap 0.6
        _scored(["Kel2", "no"], [0.9, 0.1], True, answers=["Kel2"]),  # gap 0.8
        _scored(["Kel2", "Kel2"], [0.9, 0.9], False, answers=["Kel2"]),  # no pair
    ]
    small, large = pairs_by_gap(rows)
    assert (small["pairs"], small["chosen"], small["rejected"]) == (2, 50.0, 50.0)
    assert (large["pairs"], large["chosen"], large["rejected"]) == (2, 100.0, 0.0)
    assert small["gap_to"] <= large["gap_from"]


def test_guard_raises_temperature_in_steps_up_to_its_cap() -> None:
    policy = RoundPolicy(
        guard_identical_share=0.25,
        guard_temperature_step=0.2,
        guard_max_temperature=0.8,
    )
    share = {0.3: 0.44, 0.5: 0.3, 0.7: 0.1}
    seen: list[float] = []

    def measure(t: float) -> Signals:
        seen.append(t)
        return Signals(questions=8, identical_share=share.get(t, 0.5),
                       mean_similarity=0.9)  # fmt: skip

    t, probes = guard_steps(0.3, policy, measure)
    assert t == 0.7 and seen == [0.3, 0.5, 0.7]
    assert [bool(p.trips) for p in probes] == [True, True, False]
    assert "identical share 0.440 > 0.25" in probes[0].trips[0]
    assert probes[0].to_json() == {"temperature": 0.3, "trips": probes[0].trips,
                                   "questions": 8, "identical_share": 0.44,
                                   "mean_similarity": 0.9}  # fmt: skip
    # never above the cap, even when the samples still agree there
    agree = Signals(questions=8, identical_share=0.9, mean_similarity=0.9)
    t, probes = guard_steps(0.5, policy, lambda t: agree)
    assert t == 0.8 and [p.temperature for p in probes] == [0.5, 0.7, 0.8]
    # the mean-similarity trigger alone
    sim = RoundPolicy(guard_mean_similarity=0.95)

    def similar(t: float) -> Signals:
        return Signals(questions=8, identical_share=0.0,
                       mean_similarity=0.97 if t < 0.5 else 0.9)  # fmt: skip

    t, _ = guard_steps(0.3, sim, similar)
    assert t == 0.5


# --------------------------------------------------------------------------- #
# Round configs: which model samples, which trains, on which rows
# --------------------------------------------------------------------------- #
def _label_record(folder: Path, margin: float | None = None) -> LabelRecord:
    return LabelRecord(
        command="axolotl preprocess", temperature=0.7, margin=margin,
        folder=str(folder), diagnostics={}, signals=Signals(questions=4),
        pairs_by_gap=[], pick_by_n=[], counts={}, pairs=4,
        score_distribution=ScoreDistribution(all=[], chosen=[], rejected=[]),
        mean_margin=0.1, lengths={}, label_seconds={},
    )  # fmt: skip


def _iteration(tmp: Path, model: Path, policy: RoundPolicy) -> Iteration:
    out = tmp / f"run_{policy.train_from}_{policy.sample_with}"
    stages = Stages(out, {"p": policy.settings()}, fresh=True)
    it = Iteration(_recipe(tmp, model), out, stages, policy, EvalSettings())
    r1 = it.rdir(1)
    records = {
        "questions_1": it.questions(1),
        "guard_1": GuardRecord(temperature=0.7, probes=[]),
        "label_1": _label_record(r1 / "labels"),
        "train_1": TrainRecord(
            command="axolotl train", base_model=str(model), labels=str(r1 / "labels"),
            train_file=str(r1 / "labels" / "train_orpo_seq1024_error.jsonl"),
            training_rows=3, union_files=[], union_rows=0, adapter=str(r1 / "adapter"),
        ),
    }  # fmt: skip
    if policy.sample_with == "merged":
        records["merge_1"] = ModelRecord(model=str(r1 / "model"))
    for name, rec in records.items():
        stages.run(name, lambda rec=rec: rec)
    stages.run("questions_2", lambda: it.questions(2))
    return it


@pytest.mark.parametrize("train_from", ["previous", "base"])
@pytest.mark.parametrize("sample_with", ["merged", "adapter"])
def test_round_two_config(
    tmp_path: Path, tiny_llama_dir: Path, train_from: str, sample_with: str
) -> None:
    policy = RoundPolicy(
        questions_per_round=4, train_from=train_from, sample_with=sample_with
    )
    it = _iteration(tmp_path, tiny_llama_dir, policy)
    r1 = it.rdir(1)
    cfg = it.round_config(2)
    # sampling: the round-1 model, merged or as base + adapter
    if sample_with == "merged":
        assert cfg["sealong_model"] == str(r1 / "model")
        assert "sealong_adapter" not in cfg
    else:
        assert cfg["sealong_model"] == str(tiny_llama_dir)
        assert cfg["sealong_adapter"] == str(r1 / "adapter")
    # training: continue (the merged model, or the adapter itself) or the base
    expect_base = (
        str(r1 / "model")
        if (train_from, sample_with) == ("previous", "merged")
        else str(tiny_llama_dir)
    )
    assert cfg["base_model"] == expect_base
    if (train_from, sample_with) == ("previous", "adapter"):
        assert cfg["lora_model_dir"] == str(r1 / "adapter")
    else:
        assert "lora_model_dir" not in cfg
    # data: round 2's fresh questions, plus round 1's pairs when training the base
    first, *rest = cfg["datasets"]
    assert first["type"] == "axolotl_sealong.self_label"
    assert first["path"] == str(it.rdir(2) / "questions.jsonl")
    rows = [json.loads(x) for x in Path(first["path"]).read_text().splitlines()]
    assert [r["question"] for r in rows] == [
        f"Which river does Zorvan{i}-2 lie on?" for i in range(4, 8)
    ]
    if train_from == "base":
        assert rest == [
            {
                "path": str(r1 / "labels" / "train_orpo_seq1024_error.jsonl"),
                "ds_type": "json",
                "split": "train",
                "type": "chat_template.argilla",
            }
        ]
    else:
        assert rest == []
    assert cfg["output_dir"] == str(it.rdir(2) / "adapter")
    assert cfg["dataset_prepared_path"] == str(it.rdir(2) / "prepared")


def test_same_questions_every_round_without_the_policy(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    it = _iteration(tmp_path, tiny_llama_dir, RoundPolicy())
    assert it.round_config(2)["datasets"] == it.recipe["datasets"]


# --------------------------------------------------------------------------- #
# Stages: legacy settings, adopting another run's rounds
# --------------------------------------------------------------------------- #
def _record(name: str) -> Any:
    """A typed record for stage ``name`` that says which stage made it."""
    kind = name.rsplit("_", 1)[0]
    if kind == "eval":
        return EvalRecord(tasks={}, command=name, model="m", adapter=None)
    if kind == "label":
        return _label_record(Path(name))
    if kind == "train":
        return TrainRecord(command=name, base_model="b", labels="l", train_file=None,
                           training_rows=None, union_files=[], union_rows=0,
                           adapter="a")  # fmt: skip
    return ModelRecord(model=name)


def test_state_is_versioned_and_holds_typed_records(tmp_path: Path) -> None:
    stages = Stages(tmp_path, {"a": 1}, fresh=False)
    made = stages.run("label_1", lambda: _label_record(tmp_path, margin=0.25))
    raw = json.loads((tmp_path / "state.json").read_text())
    assert raw["format"] == STATE_FORMAT == 2
    assert raw["stages"]["label_1"]["result"] == made.to_json()
    again = Stages(tmp_path, {"a": 1}, fresh=False)
    assert again.done("label_1", LabelRecord) == made
    assert again.done("train_1", TrainRecord) is None
    with pytest.raises(TypeError, match="returned a dict, not a TrainRecord"):
        again.run("train_1", lambda: {"adapter": "a"})  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="no such kind of stage"):
        again.run("model", lambda: ModelRecord(model="m"))  # the demo's only


def test_stages_resume_with_tuple_settings(tmp_path: Path) -> None:
    """EvalSettings hold tuples; state.json lists. A resume once refused them."""
    settings = {"eval": dataclasses.asdict(EvalSettings(tasks=("t",), args=("-x",)))}
    Stages(tmp_path, settings, fresh=False).run("merge_1", lambda: _record("merge_1"))
    again = Stages(tmp_path, settings, fresh=False)
    assert again.done("merge_1", ModelRecord) == ModelRecord(model="merge_1")


def _unversioned(out: Path) -> dict[str, Any]:
    """The fixture (written before format 2) as ``out``'s state.json."""
    state = json.loads(UNVERSIONED_STATE.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "state.json").write_text(json.dumps(state))
    return state


def test_a_state_written_before_format_2_resumes_when_its_records_fit(
    tmp_path: Path,
) -> None:
    old = _unversioned(tmp_path)
    assert "format" not in old
    stages = Stages(tmp_path, old["settings"], fresh=False)
    assert list(stages) == list(old["stages"])
    label = stages.done("label_2", LabelRecord)
    assert label is not None and label.signals.questions == 4 and label.margin
    guard = stages.done("guard_2", GuardRecord)
    assert guard is not None and [p.temperature for p in guard.probes] == [0.7, 1.0]
    # rewritten as format 2, every record as it was
    new = json.loads((tmp_path / "state.json").read_text())
    assert new == {"format": 2, **old}
    with pytest.raises(ValueError, match=r"other settings: union_max_rows \(3 -> 4\)"):
        Stages(tmp_path, {**old["settings"], "union_max_rows": 4}, fresh=False)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (  # a label record of 0.1.0: no signals
            lambda s: s["stages"]["label_1"]["result"].pop("signals"),
            r"no format \(written by sealong 0.1.0, before state.json had one\) and "
            r"its stage label_1 does not fit format 2 \(signals: Field required\); "
            r"this sealong writes format 2",
        ),
        (  # a train record of 0.1.0: no base_model
            lambda s: s["stages"]["train_1"]["result"].pop("base_model"),
            r"its stage train_1 does not fit format 2 \(base_model: Field required",
        ),
        (  # settings from before a round policy existed
            lambda s: s["settings"].pop("union_max_rows"),
            r"no format .* and its settings have no union_max_rows",
        ),
        (
            lambda s: s.update(format=3),
            r"has format 3, from another sealong; this one reads and writes format 2",
        ),
        (
            lambda s: s.update(format=2) or s["stages"]["eval_0"].pop("result"),
            r"stage eval_0 holds no valid record \(no 'result'\)",
        ),
    ],
)
def test_a_state_this_version_cannot_resume_is_refused_with_the_fix(
    tmp_path: Path, edit: Any, message: str
) -> None:
    out = tmp_path / "run"
    state = _unversioned(out)
    settings = dict(state["settings"])
    edit(state)
    (out / "state.json").write_text(json.dumps(state))
    with pytest.raises(StateError, match=message) as err:
        Stages(out, settings, fresh=False)
    assert "--fresh" in str(err.value) and "--out" in str(err.value)
    assert "Stage" not in str(err.value)  # no traceback-ish type names
    assert Stages(out, settings, fresh=True).done("label_1", LabelRecord) is None


def test_from_run_adopts_earlier_rounds_only_when_setup_matches(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    a = tmp_path / "a"
    sa = Stages(a, {"lr": 1, **RoundPolicy().settings()}, fresh=False)
    for name in ("eval_0", "label_1", "train_1", "merge_1", "eval_1", "label_2"):
        sa.run(name, lambda name=name: _record(name))
    policy = RoundPolicy(questions_per_round=4)
    mine = {"lr": 1, **policy.settings()}
    b = Stages(tmp_path / "b", mine, fresh=False)
    it = Iteration(_recipe(tmp_path, tiny_llama_dir), tmp_path / "b", b, policy,
                   EvalSettings(tasks=("t",)))  # fmt: skip
    adopt_rounds(b, a, 2, True, it)
    assert sorted(b) == ["eval_0", "eval_1", "label_1", "merge_1", "train_1"]
    assert b.done("merge_1", ModelRecord) == ModelRecord(model="merge_1")
    assert b.seconds() == {}  # adopted stages are not this run's time
    assert b.adopted() == sorted(b)
    assert Stages(tmp_path / "b", mine, fresh=False).adopted() == sorted(b)
    other = Stages(tmp_path / "c", {**mine, "lr": 2}, fresh=False)
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        adopt_rounds(other, a, 2, True, it)
    with pytest.raises(ValueError, match="has not finished stage"):
        adopt_rounds(Stages(tmp_path / "d", mine, fresh=False), a, 3, True, it)


# --------------------------------------------------------------------------- #
# Evaluation files and the report
# --------------------------------------------------------------------------- #
def test_read_eval_pairs_questions_per_task(tmp_path: Path) -> None:
    folder = tmp_path / "eval" / "model"
    folder.mkdir(parents=True)
    for task, scores in (("task_a", [1, 0, 1]), ("task_b", [0, 0])):
        rows = [
            {"doc_id": i, "sub_em": s, "output_tokens": 3}
            for i, s in reversed(list(enumerate(scores)))
        ]
        (folder / f"samples_{task}_2026-11-26T01-00-00.123.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
    got = read_eval(tmp_path / "eval", ("task_a", "task_b"), "sub_em")
    assert got["task_a"].doc_ids == [0, 1, 2]
    assert got["task_a"].scores == [1.0, 0.0, 1.0]
    assert got["task_b"].scores == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="no per-question 'acc'.*--eval-metric"):
        read_eval(tmp_path / "eval", ("task_a",), "acc")


def test_report_shows_rounds_vs_previous_signals_and_probes(tmp_path: Path) -> None:
    def ev(scores: list[float]) -> EvalRecord:
        return EvalRecord(
            tasks={"t": TaskScores(doc_ids=list(range(len(scores))), scores=scores,
                                   output_tokens=[2.0] * len(scores),
                                   samples_file="f")},
            command="lm_eval ...", model="m", adapter=None,
        )  # fmt: skip

    before = [0.0] * 80 + [1.0] * 20
    one = [1.0] * 10 + before[10:]
    two = [1.0] * 20 + before[20:]
    signals = Signals(
        **label_free_signals(
            [_scored(["a", "b"], [0.5, 0.3], True)] * 3
            + [_scored(["a", "a"], [1.0, 1.0], False)]
        )
    )
    label = _label_record(tmp_path).model_copy(
        update={
            "diagnostics": {"mbr_pick": 20.0, "random_sample": 15.0,
                            "sample_mean": 15.0, "oracle": 40.0,
                            "chosen": 22.0, "rejected": 11.0},
            "pairs": 10,
            "lengths": {"all": 9.0, "chosen": 8.0, "rejected": 10.0},
            "signals": signals,
            "pairs_by_gap": [{"pairs": 5, "gap_from": 0.01, "gap_to": 0.1,
                              "chosen": 10.0, "rejected": 10.0}],
            "score_distribution": ScoreDistribution(all=[0.3, 0.5, 1.0],
                                                    chosen=[0.5], rejected=[0.3]),
        }
    )  # fmt: skip
    probe = Probe(
        temperature=0.3, questions=32, identical_share=0.4, mean_similarity=0.97,
        trips=["identical share 0.400 > 0.25"],
    )  # fmt: skip
    rounds: list[RoundResult | StoppedRound] = [
        RoundResult(
            round=r,
            sampled_by="base model" if r == 1 else "round 1 model",
            policy=RoundPolicyRecord(
                temperature=0.5, probes=[probe], margin=0.05,
                questions=QuestionsRecord(fresh=True, first=128 * (r - 1), rows=128),
                train_from="previous", training_rows=7,
                union_rows=5 if r == 2 else None, union=None,
            ),
            label=label,
        )
        for r in (1, 2)
    ]  # fmt: skip
    stopped = StoppedRound(
        round=3,
        stopped="guard at its cap T=0.5 and still identical share 0.300 > 0.2",
        result_round=2,
        policy=GuardRecord(temperature=0.5, probes=[
            Probe(temperature=0.5, questions=64, identical_share=0.3,
                  mean_similarity=0.9, trips=["identical share 0.300 > 0.2"])]),
    )  # fmt: skip
    stages = Stages(tmp_path, {"x": 1}, fresh=False)
    stages.run("eval_0", lambda: ev(before))
    report = build_report(
        tmp_path,
        kind="iterate",
        evals=[ev(before), ev(one), ev(two)],
        rounds=[*rounds, stopped],
        stages=stages,
        command="sealong iterate ...",
        extra={"recipe_path": "r.yml", "base_model": "m"},
    )
    assert [e["subem"] for e in report["evals"]] == [20.0, 30.0, 40.0]
    assert report["evals"][2]["gain_vs_previous"]["gain"] == 10.0
    text = (tmp_path / "report.md").read_text()
    assert "# SEALONG iterate report" in text
    assert "| round 2 | 40.0 |" in text and "| +10.0 | [+" in text
    assert "Round 2 vs round 1: +10.0" in text
    assert "| 2 | 128-255 (fresh) | 0.5 | 0.25 |" in text
    assert "| 1 | 0.3 | 32 | 0.4 | 0.97 | identical share 0.400 > 0.25 |" in text
    assert "| 1 | 0.01-0.1 | 5 | 10.0 | 10.0 |" in text
    assert "gap >= 0.05" in text
    assert "| 7 |\n| 2 |" in text and "| 7 + 5 older |" in text
    # a stopped round: no model, no eval; the result is the round before it
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert report["stopped"]["round"] == 3 and report["after"] == 40.0
    assert "**Round 3: stopped** before labeling (guard at its cap T=0.5" in text
    assert "the result is round 2's model" in text
    assert "| 3 | 0.5 | 64 | 0.3 | 0.9 | identical share 0.300 > 0.2 |" in text
    assert json.loads((tmp_path / "report.json").read_text())["tasks"]["t"]
    assert (tmp_path / "before_after.png").read_bytes()[:4] == b"\x89PNG"
    assert markdown.render_markdown(report) == text
    # report.json: the rounds as recorded, without the score lists (plotted)
    first = report["rounds"][0]
    assert "score_distribution" not in first and first["signals"] == signals.to_json()
    assert first["policy"]["questions"] == {"fresh": True, "first": 0, "rows": 128}
    assert report["stopped"]["policy"]["probes"][0]["questions"] == 64


# --------------------------------------------------------------------------- #
# Bounded union and early stop
# --------------------------------------------------------------------------- #
def _label_folder(folder: Path, gaps: list[float | None], tag: str) -> list[dict]:
    """scored.jsonl + preference.jsonl as the pipeline writes them (None: no pair)."""
    folder.mkdir(parents=True, exist_ok=True)
    scored, prefs = [], []
    for i, gap in enumerate(gaps):
        a, b = f"{tag}{i} yes", f"{tag}{i} no"
        scored.append(
            {"samples": [a, b], "scores": [0.9, 0.9 - (gap or 0.0)], "chosen": 0,
             "rejected": None if gap is None else 1, "gap": gap or 0.0,
             "skip_reason": "identical" if gap is None else None}
        )  # fmt: skip
        if gap is not None:
            prefs.append(
                {"chosen": [{"role": "user", "content": f"q{tag}{i}"},
                            {"role": "assistant", "content": a}],
                 "rejected": [{"role": "user", "content": f"q{tag}{i}"},
                              {"role": "assistant", "content": b}]}
            )  # fmt: skip
    for name, rows in (("scored.jsonl", scored), ("preference.jsonl", prefs)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return prefs


def test_row_gaps_and_own_rows_read_the_labels(tmp_path: Path) -> None:
    prefs = _label_folder(tmp_path, [0.1, None, 0.5, 0.3], "a")
    gaps = runs.row_gaps(tmp_path, "orpo")
    assert [gaps[runs.row_key(r)] for r in prefs] == [0.1, 0.5, 0.3]
    assert runs.own_rows(tmp_path, "orpo", None) == 3
    assert runs.own_rows(tmp_path, "orpo", 0.3) == 2
    assert runs.own_rows(tmp_path, "sft", 0.3) == 4  # SFT rows: every pick
    (tmp_path / "preference.jsonl").write_text(json.dumps(prefs[0]) + "\n")
    with pytest.raises(RuntimeError, match="1 rows in preference.jsonl but 3"):
        runs.row_gaps(tmp_path, "orpo")


def test_pick_union_keeps_the_largest_gaps_in_file_order() -> None:
    r1 = [{"id": "1a"}, {"id": "1b"}, {"id": "1c"}]
    r2 = [{"id": "2a"}, {"id": "2b"}, {"id": "stray"}]
    gaps1 = {runs.row_key(r): g for r, g in zip(r1, (0.1, 0.5, 0.3), strict=True)}
    gaps2 = {runs.row_key(r): g for r, g in zip(r2[:2], (0.4, 0.05), strict=True)}
    older = [(1, r1, gaps1), (2, r2, gaps2)]
    rows, stats = runs.pick_union(older, 3)
    assert [r["id"] for r in rows] == ["1b", "1c", "2a"]
    assert stats == {"rows": 3, "older_rows": 6, "by_round": {"1": 2, "2": 1},
                     "min_gap": 0.3, "unmatched": 1}  # fmt: skip
    # a row whose gap is unknown comes last; a budget of 0 keeps nothing
    assert [r["id"] for r in runs.pick_union(older, 6)[0]][-1] == "stray"
    assert runs.pick_union(older, 5)[0][-1]["id"] == "2b"
    assert runs.pick_union(older, 0) == (
        [], {"rows": 0, "older_rows": 6, "by_round": {"1": 0, "2": 0},
             "min_gap": None, "unmatched": 1},
    )  # fmt: skip


def test_bounded_union_trains_own_rows_plus_the_best_older_ones(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    policy = RoundPolicy(questions_per_round=4, train_from="base", union_max_rows=4)
    it = _iteration(tmp_path, tiny_llama_dir, policy)
    r1 = it.rdir(1)
    prefs1 = _label_folder(r1 / "labels", [0.2, 0.6, 0.1, 0.4], "r1_")
    (r1 / "labels" / "train_orpo_seq1024_error.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in prefs1[:3])  # one dropped as too long
    )
    own = it.rdir(2) / "labels"
    _label_folder(own, [0.3, 0.05, 0.2, None], "r2_")
    rec = it.stages.run("union_2", lambda: it.union(2, own, 0.2))
    # 2 own pairs at or above the margin: 2 older rows fill the cap of 4
    assert (rec.own_rows, rec.budget, rec.rows) == (2, 2, 2)
    kept = [json.loads(x) for x in Path(rec.file).read_text().splitlines()]
    assert kept == [prefs1[0], prefs1[1]]  # gaps 0.2 and 0.6 (0.4 never trained)
    _first, *rest = it.round_config(2)["datasets"]
    assert [d["path"] for d in rest] == [rec.file]
    # a round whose own rows fill the cap trains on nothing older
    assert it.union(2, own, None).rows == 1  # 3 own pairs, cap 4


def test_the_guard_at_its_cap_stops_the_iteration(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    policy = RoundPolicy(
        guard_identical_share=0.2, guard_max_temperature=0.5, stop_at_guard_cap=True
    )
    it = _iteration(tmp_path, tiny_llama_dir, policy)
    tripped = Probe(temperature=0.5, questions=32, identical_share=0.3,
                    mean_similarity=0.9,
                    trips=["identical share 0.300 > 0.2"])  # fmt: skip
    guard = GuardRecord(temperature=0.5, probes=[tripped])
    it.stages.run("guard_2", lambda: guard)
    result = it.run_round(2)  # the recorded guard decides; nothing may run
    assert isinstance(result, StoppedRound)
    assert result.stopped == (
        "guard at its cap T=0.5 and still identical share 0.300 > 0.2"
    )
    assert result.result_round == 1 and result.policy == guard
    assert "label_2" not in it.stages
    # the same probe without the stop rule only warns: the round goes on
    no_stop = Iteration(
        it.recipe, it.out, it.stages, RoundPolicy(guard_identical_share=0.2),
        EvalSettings(),
    )  # fmt: skip
    assert no_stop.stop_reason(guard) is None
    kept = tripped.model_copy(update={"trips": []})
    assert it.stop_reason(GuardRecord(temperature=0.5, probes=[kept])) is None
