"""One implementation per rule: middle truncation, the row reader and writer.

A training prompt (``sealong label``, the plugin) and an evaluation prompt (the
lm-eval tasks) of the same question under the same budget must be cut the same
way, or the model is trained on one view of a context and scored on another.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.pipeline import fit_prompts, questions_from_rows
from axolotl_sealong.core.prompts import INSTRUCTIONS
from axolotl_sealong.integrations.lm_eval import tasks as eval_tasks

CONTEXT = "HEAD-START " + "The quick brown fox jumps over the lazy dog. " * 200
CONTEXT += "TAIL-END"
QUESTION = "Who jumps over the dog?"


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _chat_len(tok, message: str) -> int:
    ids = tok.apply_chat_template(
        [{"role": "user", "content": message}], add_generation_prompt=True
    )
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _training_prompt(tok, context: str, budget: int, strategy: str) -> str:
    cfg = LabelConfig(overlong="truncate_middle", prompt_strategy=strategy)
    questions = questions_from_rows([{"context": context, "question": QUESTION}], cfg)
    kept, skipped = fit_prompts(questions, tok, budget, cfg)
    assert not skipped and kept[0].truncated
    return kept[0].user_message


def _eval_prompt(
    folder: Path, tok_dir: Path, context: str, budget: int, strategy: str
) -> str:
    row = {"_id": "x", "context": context, "input": QUESTION, "answers": ["fox"]}
    (folder / "hotpotqa.jsonl").write_text(json.dumps(row) + "\n")
    reserve = 44
    doc = eval_tasks.load_longbench(
        "hotpotqa",
        longbench_dir=str(folder),
        tokenizer=str(tok_dir),
        max_length=budget + reserve,
        max_gen_toks=reserve,
        prompt_strategy=strategy,
    )["test"][0]
    assert doc["context_tokens_cut"] > 0
    return eval_tasks.doc_to_text(doc)


@pytest.mark.parametrize("budget", [120, 256, 700])
@pytest.mark.parametrize("strategy", ["plan_and_solve", "direct_answer"])
def test_training_and_eval_prompts_are_cut_the_same(
    tiny_tokenizer_dir: Path, tmp_path: Path, budget: int, strategy: str
) -> None:
    tok = _tokenizer(tiny_tokenizer_dir)
    train = _training_prompt(tok, CONTEXT, budget, strategy)
    evaluation = _eval_prompt(tmp_path, tiny_tokenizer_dir, CONTEXT, budget, strategy)
    assert train == evaluation
    # it fits, and no more of the context than needed was dropped
    assert budget - 4 <= _chat_len(tok, train) <= budget
    assert "HEAD-START The quick" in train and "TAIL-END" in train
    assert train.endswith(f"\n\n{QUESTION}\n{INSTRUCTIONS[strategy]}\n")


def test_non_ascii_context_is_cut_the_same(
    tiny_tokenizer_dir: Path, tmp_path: Path
) -> None:
    """Byte-level tokens can split a character; both paths split it alike."""
    tok = _tokenizer(tiny_tokenizer_dir)
    context = "Rákóczi – Ödön Lőrinc, 東京. " * 120
    train = _training_prompt(tok, context, 200, "plan_and_solve")
    assert train == _eval_prompt(
        tmp_path, tiny_tokenizer_dir, context, 200, "plan_and_solve"
    )


def test_one_reader_names_file_and_line(tmp_path: Path) -> None:
    from axolotl_sealong.common.rows import numbered_records, read_rows, write_jsonl

    rows = [{"a": i, "text": "Ödön"} for i in range(3)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    assert read_rows(path) == rows
    assert "Ödön" in path.read_text(encoding="utf-8")  # written as UTF-8, not \\u
    assert [w for w, _ in numbered_records(path)] == [f"{path}:{i}" for i in (1, 2, 3)]
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as fh:
        fh.write(path.read_text(encoding="utf-8"))
    assert read_rows(tmp_path / "r.jsonl.gz") == rows
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: expected a JSON object"):
        read_rows(tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl.gz").write_text("not gzip")
    with pytest.raises(ValueError, match="cannot be read as UTF-8 JSON"):
        read_rows(tmp_path / "bad.jsonl.gz")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable parquet file"):
        read_rows(tmp_path / "bad.parquet")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        read_rows(tmp_path)


def test_the_labels_and_eval_tasks_read_through_the_one_reader(
    tmp_path: Path,
) -> None:
    """The eval tasks accept what the row reader accepts (a gzip, a JSON array)."""
    rows = [{"_id": "a", "context": "c", "input": "q?", "answers": ["x"]}]
    (tmp_path / "musique.jsonl").write_text(json.dumps(rows))  # a JSON array
    docs = eval_tasks.load_longbench("musique", longbench_dir=str(tmp_path))["test"]
    assert docs["id"] == ["a"]


def test_the_sample_cache_reads_through_the_one_reader(tmp_path: Path) -> None:
    """A line torn by a kill is dropped (and the file rewritten), not an error."""
    from axolotl_sealong.core.cache import SampleStore

    store = SampleStore(tmp_path, {"x": 1})
    store.open_for_append()
    store.append("a", ["s1", "Ödön"])
    store.append("b", ["t1", "t2"])
    with store.samples_path.open("a", encoding="utf-8") as fh:
        fh.write('{"key": "c", "samp')  # what SIGKILL mid-write leaves
    assert store.load() == {"a": ["s1", "Ödön"], "b": ["t1", "t2"]}
    lines = store.samples_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert store.load() == {"a": ["s1", "Ödön"], "b": ["t1", "t2"]}
