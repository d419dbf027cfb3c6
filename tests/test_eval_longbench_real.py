"""The longbench_sealong tasks on real LongBench rows, through lm-eval itself.

Eight real LongBench v1 rows (tests/data/eval/longbench_real, 5 subsets, in
THUDM's schema) go through the offline path (``SEALONG_LONGBENCH_DIR``) and
through the default Hugging Face path with the rows laid out as the mirror
``Xnhyacinth/LongBench`` lays them out. That layout is taken from the script
that builds the mirror (NVIDIA/kvpress,
evaluation/benchmarks/longbench/create_huggingface_dataset.py): ``context``
wrapped in LongBench's task prompt, ``input`` turned into ``question:
"Question: {input}\\n"``, plus ``answer_prefix``, ``task``, ``max_new_tokens``.
The wrapper strings used here to build mirror rows come from the LongBench
tasks that ship with lm-eval (an independent copy of LongBench's prompts), not
from ``axolotl_sealong.integrations.lm_eval.rows``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from eval_support import GEN_KWARGS

from axolotl_sealong.core.prompts import build_user_prompt, fit_prompt
from axolotl_sealong.integrations.lm_eval import (
    discovery,
    rows as eval_rows,
    tasks as eval_tasks,
)

REAL_DIR = Path(__file__).parent / "data" / "eval" / "longbench_real"
SUBSETS = ("qasper", "multifieldqa_en", "hotpotqa", "musique", "2wikimqa")
MAX_LENGTH, MAX_GEN = 2048, 1024  # every real row is longer: all get cut
BUDGET = MAX_LENGTH - MAX_GEN


def _rows(subset: str) -> list[dict[str, Any]]:
    text = (REAL_DIR / f"{subset}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _lm_eval_prompt(subset: str) -> str:
    """LongBench's prompt for ``subset`` as lm-eval's own longbench task has it."""
    import lm_eval

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: node.value)
    path = Path(lm_eval.__file__).parent / "tasks" / "longbench" / f"{subset}.yaml"
    with path.open(encoding="utf-8") as fh:
        task = yaml.load(fh, Loader=Loader)  # noqa: S506 - SafeLoader subclass
    return str(task["doc_to_text"])


def mirror_row(row: dict[str, Any], subset: str) -> dict[str, Any]:
    """A THUDM row as the mirror's build script writes it (see module docstring)."""
    prompt = _lm_eval_prompt(subset)
    head, rest = prompt.split("{{context}}")
    # {{question}} since lm-eval moved to the mirror (PR #3361), {{input}} before
    tail, after = re.split(r"Question: \{\{(?:question|input)\}\}", rest)
    assert after.endswith("Answer:")
    out = {k: v for k, v in row.items() if k != "input"}
    out["context"] = head + row["context"] + tail
    out["question"] = "Question: " + row["input"] + after.removesuffix("Answer:")
    out |= {"answer_prefix": "Answer:", "task": subset, "max_new_tokens": 52}
    return out


class GoldOnFirstLM:
    """Answers the first doc of each task with its gold answer, the rest wrongly."""

    def __new__(cls) -> Any:
        from lm_eval.api.model import LM

        class _LM(LM):
            tokenizer = None

            def __init__(self) -> None:
                super().__init__()
                self.requests: list[tuple[str, dict[str, Any]]] = []
                self.first = {_rows(s)[0]["_id"] for s in SUBSETS}

            @property
            def tokenizer_name(self) -> str:
                return "gold-on-first"

            def apply_chat_template(
                self, chat_history: list[dict[str, str]], add_generation_prompt=True
            ) -> str:
                assert len(chat_history) == 1 and chat_history[0]["role"] == "user"
                return chat_history[0]["content"]

            def generate_until(self, requests: Any, disable_tqdm: bool = False):
                outputs = []
                for req in requests:
                    doc = dict(req.doc)
                    self.requests.append((req.arguments[0], doc))
                    outputs.append(
                        f"The answer is: {doc['answers'][0]}"
                        if doc["id"] in self.first
                        else "I cannot tell from the passages."
                    )
                return outputs

            def loglikelihood(self, requests: Any, disable_tqdm: bool = False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests: Any, disable_tqdm=False):
                raise NotImplementedError

        return _LM()


def _evaluate(tiny_tokenizer_dir: Path) -> tuple[dict[str, Any], Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    metadata = {
        "tokenizer": str(tiny_tokenizer_dir),
        "max_length": MAX_LENGTH,
        "max_gen_toks": MAX_GEN,
    }
    manager = TaskManager(
        include_path=str(discovery.task_dir()),
        include_defaults=False,
        metadata=metadata,
    )
    lm = GoldOnFirstLM()
    res = simple_evaluate(
        model=lm,
        tasks=["longbench_sealong"],
        task_manager=manager,
        apply_chat_template=True,
        log_samples=True,
    )
    assert res is not None
    return res, lm


def _check_run(res: dict[str, Any], lm: Any, tiny_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    results = res["results"]
    # one right answer per task: 1/len(task) of SubEM, on the whole output and
    # on the extracted answer alike
    for subset in SUBSETS:
        n = len(_rows(subset))
        got = results[f"longbench_sealong_{subset}"]
        assert got["sub_em,none"] == pytest.approx(1 / n), subset
        assert got["sub_em_extracted,none"] == pytest.approx(1 / n), subset
    mean = sum(1 / len(_rows(s)) for s in SUBSETS) / len(SUBSETS)
    assert results["longbench_sealong"]["sub_em,none"] == pytest.approx(mean)

    # every prompt: the raw row's context cut by the package's one rule, with
    # the question at the end; head and tail of the real context kept
    assert len(lm.requests) == sum(len(_rows(s)) for s in SUBSETS)
    by_question = {r["input"]: r for s in SUBSETS for r in _rows(s)}
    for prompt, doc in lm.requests:
        row = by_question[doc["input"]]
        fitted = fit_prompt(tok, row["context"], row["input"], "plan_and_solve", BUDGET)
        assert fitted is not None and doc["context_tokens_cut"] > 0
        assert prompt == fitted.message
        assert prompt == build_user_prompt(doc["context"], row["input"])
        assert prompt.startswith("\n" + row["context"][:40])
        assert row["context"][-20:] in prompt[-600:]
        assert "Only give me the answer" not in prompt
        assert fitted.tokens <= BUDGET
        assert doc["answers"] == row["answers"]
    for sample in res["samples"]["longbench_sealong_hotpotqa"]:
        assert sample["arguments"][0][1] == GEN_KWARGS


def test_real_rows_offline(
    tiny_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(eval_rows.ENV_LONGBENCH_DIR, str(REAL_DIR))
    res, lm = _evaluate(tiny_tokenizer_dir)
    _check_run(res, lm, tiny_tokenizer_dir)


def test_real_rows_through_the_mirror_layout(
    tiny_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    calls: list[tuple[str, str, str]] = []

    def mirror(path: str, name: str, split: str) -> datasets.Dataset:
        calls.append((path, name, split))
        return datasets.Dataset.from_list([mirror_row(r, name) for r in _rows(name)])

    monkeypatch.delenv(eval_rows.ENV_LONGBENCH_DIR, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", mirror)
    res, lm = _evaluate(tiny_tokenizer_dir)
    assert sorted(calls) == sorted(
        (eval_rows.LONGBENCH_REPO, s, "test") for s in SUBSETS
    )
    _check_run(res, lm, tiny_tokenizer_dir)


@pytest.mark.parametrize("subset", SUBSETS)
def test_mirror_rows_give_the_offline_docs(subset: str) -> None:
    """Unwrapping is exact: same context and question as THUDM's row."""
    for i, row in enumerate(_rows(subset)):
        offline = eval_rows.normalize_longbench_row(row, "offline", i, subset)
        hub = eval_rows.normalize_longbench_row(
            mirror_row(row, subset), "hub", i, subset
        )
        assert hub == offline
        assert offline["context"] == row["context"] and offline["input"] == row["input"]


def test_a_mirror_row_that_is_not_wrapped_is_refused() -> None:
    row = mirror_row(_rows("hotpotqa")[0], "hotpotqa")
    row["context"] = "Passage 1:\nNo wrapper here."
    with pytest.raises(ValueError, match=r"hub row 0: .*context is not wrapped"):
        eval_rows.normalize_longbench_row(row, "hub row 0", 0, "hotpotqa")


def test_training_and_eval_cut_real_rows_the_same(tiny_tokenizer_dir: Path) -> None:
    """The real rows, cut for training (pipeline) and for evaluation alike."""
    from transformers import AutoTokenizer

    from axolotl_sealong.core.config import LabelConfig
    from axolotl_sealong.core.pipeline import fit_prompts, questions_from_rows

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    cfg = LabelConfig(overlong="truncate_middle", question_field="input")
    for subset in SUBSETS:
        rows = _rows(subset)
        kept, skipped = fit_prompts(questions_from_rows(rows, cfg), tok, BUDGET, cfg)
        assert not skipped and all(q.truncated for q in kept)
        docs = eval_tasks.load_longbench(
            subset,
            longbench_dir=str(REAL_DIR),
            tokenizer=str(tiny_tokenizer_dir),
            max_length=MAX_LENGTH,
            max_gen_toks=MAX_GEN,
        )["test"]
        assert [q.user_message for q in kept] == [
            eval_tasks.doc_to_text(d) for d in docs
        ]
