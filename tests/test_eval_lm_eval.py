"""The tasks run through lm-eval's own evaluator with a canned-output model.

Checks the exact prompt (one user turn, no system message), the generation
kwargs and every metric value against hand-computed numbers. Runs on the lm-eval
of this venv; ``SEALONG_TEST_ALT_PYTHONS`` (paths of other venvs' pythons, with
another lm-eval version and pytest, separated by ``:``) re-runs it there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eval_support import (
    CANNED,
    GEN_KWARGS,
    GROUP_EXPECTED,
    GROUP_TASKS,
    LONGBENCH_DIR,
    SYNTH_FILE,
    TASK_EXPECTED,
    FakeLM,
    read_rows,
)

from axolotl_sealong.core.prompts import build_user_prompt
from axolotl_sealong.integrations.lm_eval.discovery import task_dir

METRICS = ("sub_em", "sub_em_extracted", "output_tokens")


def evaluate(
    tasks: list[str], metadata: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[dict[str, Any], FakeLM]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    lm = FakeLM()
    # include_defaults=False: index only our folder (seconds instead of ~10 s);
    # the default scan is covered by test_eval_discovery.py
    manager = TaskManager(
        include_path=str(task_dir()), include_defaults=False, metadata=metadata
    )
    res = simple_evaluate(
        model=lm, tasks=tasks, task_manager=manager, log_samples=True, **kwargs
    )
    assert res is not None
    return res, lm


@pytest.fixture
def local_longbench(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEALONG_LONGBENCH_DIR", str(LONGBENCH_DIR))
    return LONGBENCH_DIR


def expected_prompt(doc: dict[str, Any]) -> str:
    return build_user_prompt(doc["context"], doc["input"], "plan_and_solve")


def test_group_with_chat_template(local_longbench: Path) -> None:
    res, lm = evaluate(
        ["longbench_sealong", "longbench_sealong_narrativeqa"],
        apply_chat_template=True,
    )
    results = res["results"]
    for task, values in TASK_EXPECTED.items():
        if task == "sealong_synth":
            continue
        for metric, value in zip(METRICS, values, strict=True):
            assert results[task][f"{metric},none"] == pytest.approx(value), (
                task,
                metric,
            )
    for metric, value in zip(METRICS, GROUP_EXPECTED, strict=True):
        assert results["longbench_sealong"][f"{metric},none"] == pytest.approx(value)
    # narrativeqa runs, but stays outside the group's average
    assert set(res["group_subtasks"]["longbench_sealong"]) == set(GROUP_TASKS)

    # one user turn per doc, no system message, the paper's text byte for byte
    assert len(lm.requests) == 12
    for prompt, gen_kwargs, doc in lm.requests:
        assert gen_kwargs == GEN_KWARGS
        chat = [{"role": "user", "content": expected_prompt(doc)}]
        assert prompt == "<chat>" + json.dumps(chat) + "</chat>"
    assert all(len(c) == 1 and c[0]["role"] == "user" for c in lm.chats)

    # the per-sample metrics, as logged
    for task in (*GROUP_TASKS, "longbench_sealong_narrativeqa"):
        for sample in res["samples"][task]:
            output, full, extracted, words = CANNED[sample["doc"]["id"]]
            assert sample["resps"] == [[output]]
            assert sample["sub_em"] == full
            assert sample["sub_em_extracted"] == extracted
            assert sample["output_tokens"] == words


def test_plain_prompt_without_chat_template(local_longbench: Path) -> None:
    res, lm = evaluate(["longbench_sealong_hotpotqa"])
    assert not lm.chats
    rows = read_rows(LONGBENCH_DIR / "hotpotqa.jsonl")
    assert [r[0] for r in lm.requests] == [
        build_user_prompt(r["context"], r["input"], "plan_and_solve") for r in rows
    ]
    # spelled out once, so a change to the shared template shows up here too
    question = "Is the Virgilia found in Africa? And is Koeleria found all over?"
    assert lm.requests[0][0] == (
        "\n" + rows[0]["context"] + "\n\n" + question + "\nLet's first understand "
        "the problem and devise a plan to solve it. Then, let's carry out the plan "
        "and solve the problem step-by-step.\n"
    )
    assert res["samples"]["longbench_sealong_hotpotqa"][0]["arguments"][0][1] == (
        GEN_KWARGS
    )


def test_synth_task_from_metadata() -> None:
    res, lm = evaluate(["sealong_synth"], metadata={"synth_eval_path": str(SYNTH_FILE)})
    values = TASK_EXPECTED["sealong_synth"]
    for metric, value in zip(METRICS, values, strict=True):
        assert res["results"]["sealong_synth"][f"{metric},none"] == pytest.approx(value)
    rows = read_rows(SYNTH_FILE)
    assert [r[0] for r in lm.requests] == [
        build_user_prompt(r["context"], r["question"], "plan_and_solve") for r in rows
    ]


def test_missing_folder_surfaces_through_lm_eval(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("SEALONG_LONGBENCH_DIR", str(missing))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        evaluate(["longbench_sealong_qasper"])


def test_missing_synth_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SEALONG_SYNTH_EVAL", raising=False)
    monkeypatch.setenv("SEALONG_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="SEALONG_SYNTH_EVAL"):
        evaluate(["sealong_synth"])
