"""Helpers shared by the lm-eval task tests (no test functions here)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

DATA = Path(__file__).parent / "data" / "eval"
LONGBENCH_DIR = DATA / "longbench"
SYNTH_FILE = DATA / "synth_eval.jsonl"

GROUP_TASKS = (
    "longbench_sealong_qasper",
    "longbench_sealong_multifieldqa_en",
    "longbench_sealong_hotpotqa",
    "longbench_sealong_musique",
    "longbench_sealong_2wikimqa",
)

GEN_KWARGS = {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": 1024}

# doc id -> (canned output, sub_em, sub_em_extracted, whitespace words), by hand.
CANNED: dict[str, tuple[str, float, float, int]] = {
    "qasper-toy-1": ("I do not know.", 0.0, 0.0, 4),
    "qasper-toy-2": ("Final answer: 4", 0.0, 0.0, 3),
    "qasper-toy-3": ("They will release it later.", 0.0, 0.0, 5),
    "mfqa-toy-1": ("green", 1.0, 1.0, 1),
    "mfqa-toy-2": ("It started in 1953.", 0.0, 0.0, 4),
    "5ade28b15542997c77aded83": ("Both hold, so yes.\nThe answer is: yes", 1.0, 1.0, 8),
    # the gold answer appears in the reasoning, the extracted answer is wrong
    "5a774c0155429966f1a36ce2": (
        "Home Monthly came first, but the answer is Mirabella",
        1.0,
        0.0,
        9,
    ),
    "2hop__341176_711757": ("Ryki", 1.0, 1.0, 1),
    "2hop__607517_161450": ("The answer is the Black Sea", 0.0, 0.0, 6),
    "c34451720bdc11eba7f7acde48001122": ("Answer: Fomboni", 1.0, 1.0, 2),
    "470e29a308cb11ebbd92ac1f6bf848b6": ("I cannot tell.", 0.0, 0.0, 3),
    "nqa-toy-1": ("Mira hid it.", 1.0, 1.0, 3),
    "synth-1": ("Tessa is on Marrow Bay.", 1.0, 1.0, 5),
    "synth-2": ("It holds 400 maps.", 0.0, 0.0, 4),
}

# Per-task means of the table above: (sub_em, sub_em_extracted, output_tokens).
TASK_EXPECTED = {
    "longbench_sealong_qasper": (0.0, 0.0, 4.0),
    "longbench_sealong_multifieldqa_en": (0.5, 0.5, 2.5),
    "longbench_sealong_hotpotqa": (1.0, 0.5, 8.5),
    "longbench_sealong_musique": (0.5, 0.5, 3.5),
    "longbench_sealong_2wikimqa": (0.5, 0.5, 2.5),
    "longbench_sealong_narrativeqa": (1.0, 1.0, 3.0),
    "sealong_synth": (0.5, 0.5, 4.5),
}
# Unweighted mean over the five (qasper has 3 docs, the others 2): a mean
# weighted by size would give 5/11, 4/11 and 46/11 instead.
GROUP_EXPECTED = (0.5, 0.4, 4.2)


class FakeLM(LM):
    """Returns CANNED outputs; records chat turns and requests."""

    tokenizer = None

    def __init__(self) -> None:
        super().__init__()
        self.chats: list[list[dict[str, str]]] = []
        self.requests: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    @property
    def tokenizer_name(self) -> str:
        return "fake"

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        self.chats.append(chat_history)
        return "<chat>" + json.dumps(chat_history) + "</chat>"

    def generate_until(self, requests: Any, disable_tqdm: bool = False) -> list[str]:
        outputs = []
        for req in requests:
            prompt, gen_kwargs = req.arguments
            self.requests.append((prompt, dict(gen_kwargs), dict(req.doc)))
            outputs.append(CANNED[req.doc["id"]][0])
        return outputs

    def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
        raise NotImplementedError

    def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> Any:
        raise NotImplementedError


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# How the real rows in data/eval/longbench were made (kept with them).
def _passages(items: Iterable[tuple[str, str]]) -> str:
    return "".join(
        f"Passage {i}:\n{title}\n{text}\n" for i, (title, text) in enumerate(items, 1)
    )


def multihop_to_longbench(row: Mapping[str, Any]) -> dict[str, Any]:
    """A HotpotQA / 2WikiMultihopQA / MuSiQue row as a LongBench-style row.

    The context joins the row's own paragraphs as ``Passage i:\\ntitle\\ntext``,
    the layout of LongBench's multi-document subsets. The rows are far shorter
    than LongBench's (about 1-3K tokens instead of 5-15K): a smoke set, not a
    benchmark.
    """
    if "paragraphs" in row:  # MuSiQue
        items = [(p["title"], p["paragraph_text"]) for p in row["paragraphs"]]
        answers = [row["answer"], *row.get("answer_aliases", [])]
        rid = row["id"]
    elif "context" in row and isinstance(row["context"], list):  # HotpotQA, 2Wiki
        items = [
            (title, " ".join(s.strip() for s in sents))
            for title, sents in row["context"]
        ]
        answers = [row["answer"]]
        rid = row["_id"]
    else:
        raise ValueError("expected a HotpotQA, 2WikiMultihopQA or MuSiQue row")
    return {
        "_id": rid,
        "input": row["question"],
        "context": _passages(items),
        "answers": answers,
        "length": -1,
    }
