"""The task folder, the loaders, bad input and the truncation rule (no lm-eval run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import write_jsonl
from eval_support import (
    GEN_KWARGS,
    GROUP_TASKS,
    LONGBENCH_DIR,
    SYNTH_FILE,
    multihop_to_longbench,
    read_rows,
)

from axolotl_sealong.core.prompts import INSTRUCTIONS, build_user_prompt, prompt_tokens
from axolotl_sealong.integrations.lm_eval import (
    discovery,
    rows as eval_rows,
    tasks as eval_tasks,
    truncation,
)

TASK_DIR = discovery.task_dir()


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: f"!{node.value}")


def load_yaml(name: str) -> dict[str, Any]:
    with (TASK_DIR / name).open() as fh:
        data = yaml.load(fh, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------- #
# The YAMLs
# --------------------------------------------------------------------------- #
def test_task_folder_layout() -> None:
    names = {p.name for p in TASK_DIR.iterdir() if p.suffix == ".yaml"}
    subsets = eval_rows.LONGBENCH_SUBSETS
    assert names == {f"longbench_sealong_{s}.yaml" for s in subsets} | {
        "_longbench_sealong.yaml",
        "sealong_synth.yaml",
    }
    template = load_yaml("_template_yaml")
    assert template["generation_kwargs"] == GEN_KWARGS
    assert template["output_type"] == "generate_until"
    assert template["dataset_path"] == eval_rows.LONGBENCH_REPO
    assert [m["metric"] for m in template["metric_list"]] == [
        "sub_em",
        "sub_em_extracted",
        "output_tokens",
    ]
    for subset in subsets:
        task = load_yaml(f"longbench_sealong_{subset}.yaml")
        assert task["task"] == f"longbench_sealong_{subset}"
        assert task["dataset_kwargs"] == {"subset": subset}
        assert task["include"] == "_template_yaml"
    assert load_yaml("sealong_synth.yaml")["custom_dataset"] == "!utils.load_synth"


def test_group_is_the_papers_average() -> None:
    group = load_yaml("_longbench_sealong.yaml")
    assert group["group"] == "longbench_sealong"
    assert tuple(group["task"]) == GROUP_TASKS
    assert [a["metric"] for a in group["aggregate_metric_list"]] == [
        "sub_em",
        "sub_em_extracted",
        "output_tokens",
    ]
    for agg in group["aggregate_metric_list"]:
        assert agg["weight_by_size"] is False
        assert agg["filter_list"] == ["none"]
        assert agg["aggregation"] == "mean"


def test_task_dir_and_readme() -> None:
    readme = (TASK_DIR / "README.md").read_text()
    for word in ("SubEM", "Table 2", "Changelog", "SEALONG_LONGBENCH_DIR", "middle"):
        assert word in readme


# --------------------------------------------------------------------------- #
# Prompt and metrics
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("subset", eval_rows.LONGBENCH_SUBSETS)
def test_prompt_is_the_shared_template(subset: str) -> None:
    docs = eval_tasks.load_longbench(subset, longbench_dir=str(LONGBENCH_DIR))["test"]
    rows = read_rows(LONGBENCH_DIR / f"{subset}.jsonl")
    assert len(docs) == len(rows)
    for doc, row in zip(docs, rows, strict=True):
        question = row["input"] if "input" in row else row["question"]
        prompt = eval_tasks.doc_to_text(doc)
        assert prompt == build_user_prompt(row["context"], question, "plan_and_solve")
        assert prompt == f"\n{row['context']}\n\n{question}\n" + (
            INSTRUCTIONS["plan_and_solve"] + "\n"
        )
        assert doc["answers"] == row["answers"]
        assert doc["context_tokens_cut"] == 0 and doc["tokenizer"] == ""


def test_process_results_by_hand() -> None:
    doc = {"answers": ["Home Monthly"], "tokenizer": ""}
    out = (
        "Mirabella appeared in 1989.\n"
        "Home Monthly is older, so the answer is Home Monthly."
    )
    assert eval_tasks.process_results(doc, [out]) == {
        "sub_em": 1.0,
        "sub_em_extracted": 1.0,
        "output_tokens": 14.0,
    }
    wrong = "Home Monthly, or maybe not. The answer is: Mirabella"
    assert eval_tasks.process_results(doc, [wrong]) == {
        "sub_em": 1.0,
        "sub_em_extracted": 0.0,
        "output_tokens": 9.0,
    }
    assert eval_tasks.process_results(doc, [""])["sub_em"] == 0.0


def test_output_tokens_with_the_models_tokenizer(tiny_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    text = "The answer is 42. Paris is the capital of France."
    doc = {"answers": ["42"], "tokenizer": str(tiny_tokenizer_dir)}
    got = eval_tasks.process_results(doc, [text])["output_tokens"]
    assert got == len(tok(text, add_special_tokens=False)["input_ids"])
    assert got != len(text.split())


# --------------------------------------------------------------------------- #
# Data sources and bad input
# --------------------------------------------------------------------------- #
def test_env_var_selects_the_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eval_rows.ENV_LONGBENCH_DIR, str(LONGBENCH_DIR))
    docs = eval_tasks.load_longbench("qasper")["test"]
    assert docs["id"] == ["qasper-toy-1", "qasper-toy-2", "qasper-toy-3"]
    assert docs[0]["input"] == "Which dataset do the authors evaluate on?"


def test_hub_mirror_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[Any, ...]] = []

    def fake_load(path: str, name: str, split: str) -> list[dict[str, Any]]:
        calls.append((path, name, split))
        return [{"context": "c", "question": "q?", "answers": ["a"], "_id": "x"}]

    monkeypatch.delenv(eval_rows.ENV_LONGBENCH_DIR, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    docs = eval_tasks.load_longbench("musique")["test"]
    assert calls == [("Xnhyacinth/LongBench", "musique", "test")]
    assert docs[0]["input"] == "q?" and docs[0]["id"] == "x"

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"musique.*set \$SEALONG_LONGBENCH_DIR"):
        eval_tasks.load_longbench("musique")


def test_unloadable_tokenizer_falls_back_to_words(tmp_path: Path) -> None:
    docs = eval_tasks.load_longbench(
        "qasper", longbench_dir=str(LONGBENCH_DIR), pretrained=str(tmp_path / "no")
    )["test"]
    assert docs[0]["tokenizer"] == ""


def test_missing_folder_names_the_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "longbench"
    monkeypatch.setenv(eval_rows.ENV_LONGBENCH_DIR, str(missing))
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*SEALONG_LONGBENCH_DIR"):
        eval_tasks.load_longbench("hotpotqa")
    with pytest.raises(FileNotFoundError, match=r"metadata 'longbench_dir'"):
        eval_tasks.load_longbench("hotpotqa", longbench_dir=str(missing))


def test_missing_subset_names_the_file(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "qasper.jsonl", [{"context": "c", "input": "q", "answers": ["a"]}]
    )
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'musique.jsonl'}"):
        eval_tasks.load_longbench("musique", longbench_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown LongBench subset 'gov_report'"):
        eval_tasks.load_longbench("gov_report", longbench_dir=str(tmp_path))


GOOD = {"context": "ctx", "input": "q?", "answers": ["a"]}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"input": "q?", "answers": ["a"]}, "missing field 'context'"),
        ({"context": "c", "answers": ["a"]}, "missing field 'input' or 'question'"),
        ({"context": "c", "input": "q"}, "missing field 'answers'"),
        ({**GOOD, "answers": "a"}, "'answers' must be a non-empty list of strings"),
        ({**GOOD, "answers": []}, "'answers' must be a non-empty list of strings"),
        ({**GOOD, "answers": [1]}, "'answers' must be a non-empty list of strings"),
        ({**GOOD, "answers": [" "]}, "'answers' has only empty strings"),
        ({**GOOD, "context": ["c"]}, "field 'context' must be a string, got list"),
        (["not", "an", "object"], "expected a JSON object per row, got list"),
    ],
)
def test_malformed_row_names_file_line_and_field(
    tmp_path: Path, row: Any, message: str
) -> None:
    path = write_jsonl(tmp_path / "hotpotqa.jsonl", [GOOD, row])
    with pytest.raises(ValueError, match=rf"{path}:2: .*{message}"):
        eval_tasks.load_longbench("hotpotqa", longbench_dir=str(tmp_path))


def test_bad_json_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "musique.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{oops\n")
    with pytest.raises(ValueError, match=rf"{path}:2: not valid JSON"):
        eval_tasks.load_longbench("musique", longbench_dir=str(tmp_path))
    path.write_text("\n")
    with pytest.raises(ValueError, match=rf"{path}: no rows"):
        eval_tasks.load_longbench("musique", longbench_dir=str(tmp_path))


def test_synth_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEALONG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(eval_rows.ENV_SYNTH_EVAL, raising=False)
    with pytest.raises(
        FileNotFoundError, match=r"\$SEALONG_SYNTH_EVAL.*synth_eval_path"
    ):
        eval_tasks.load_synth()
    monkeypatch.setenv(eval_rows.ENV_SYNTH_EVAL, str(tmp_path / "nope.jsonl"))
    with pytest.raises(
        FileNotFoundError, match=r"nope.jsonl \(from \$SEALONG_SYNTH_EVAL"
    ):
        eval_tasks.load_synth()
    monkeypatch.setenv(eval_rows.ENV_SYNTH_EVAL, str(SYNTH_FILE))
    docs = eval_tasks.load_synth()["test"]
    assert docs["id"] == ["synth-1", "synth-2"] and docs["length"] == [40, 38]
    default = tmp_path / "cache" / "synth" / "eval.jsonl"
    default.parent.mkdir(parents=True)
    default.write_text(SYNTH_FILE.read_text())
    monkeypatch.delenv(eval_rows.ENV_SYNTH_EVAL)
    assert len(eval_tasks.load_synth()["test"]) == 2
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"context": "c", "question": "q", "answers": ["a"], "num_tokens": "9"}],
    )
    with pytest.raises(ValueError, match=rf"{bad}:1: field 'num_tokens'"):
        eval_tasks.load_synth(synth_eval_path=str(bad))
    with pytest.raises(ValueError, match=r"missing field 'question'"):
        eval_tasks.load_synth(synth_eval_path=str(LONGBENCH_DIR / "hotpotqa.jsonl"))


# --------------------------------------------------------------------------- #
# Truncation: the middle of the context, by the model's tokenizer
# --------------------------------------------------------------------------- #
def _long_folder(tmp_path: Path) -> Path:
    context = "HEAD-START " + "The quick brown fox jumps over the lazy dog. " * 200
    context += "TAIL-END"
    write_jsonl(
        tmp_path / "hotpotqa.jsonl",
        [
            {
                "_id": "long",
                "context": context,
                "input": "Who jumps?",
                "answers": ["fox"],
            },
            {"_id": "short", "context": "A fox.", "input": "Who?", "answers": ["fox"]},
        ],
    )
    return tmp_path


def test_middle_truncation_fits_the_budget(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    meta = {
        "longbench_dir": str(_long_folder(tmp_path)),
        "pretrained": str(tiny_tokenizer_dir),
        "max_length": 300,
        "max_gen_toks": 44,
    }
    long_doc, short_doc = eval_tasks.load_longbench("hotpotqa", **meta)["test"]
    prompt = eval_tasks.doc_to_text(long_doc)
    n_tokens = prompt_tokens(tok, prompt)
    assert 240 <= n_tokens <= 256  # budget = 300 - 44, chat template included
    assert long_doc["context_tokens_cut"] > 1000
    assert long_doc["context"].startswith("HEAD-START The quick")
    assert long_doc["context"].endswith("TAIL-END")
    assert prompt.endswith("\n\nWho jumps?\n" + INSTRUCTIONS["plan_and_solve"] + "\n")
    assert short_doc["context"] == "A fox." and short_doc["context_tokens_cut"] == 0
    assert long_doc["tokenizer"] == str(tiny_tokenizer_dir)


def test_truncation_error_mode_refuses(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    meta = {
        "longbench_dir": str(_long_folder(tmp_path)),
        "tokenizer": str(tiny_tokenizer_dir),
        "max_length": 300,
        "truncation": "error",
    }
    with pytest.raises(
        ValueError, match=r"hotpotqa doc long: the prompt is \d+ tokens"
    ):
        eval_tasks.load_longbench("hotpotqa", **meta)
    meta["max_length"] = 100_000
    assert len(eval_tasks.load_longbench("hotpotqa", **meta)["test"]) == 2
    del meta["max_length"]
    meta["tokenizer"] = ""
    with pytest.raises(
        ValueError, match="truncation 'error' needs the model's tokenizer"
    ):
        eval_tasks.load_longbench("hotpotqa", **meta)


def test_truncation_none_and_bad_mode(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    folder = str(_long_folder(tmp_path))
    meta = {
        "longbench_dir": folder,
        "tokenizer": str(tiny_tokenizer_dir),
        "max_length": 300,
    }
    docs = eval_tasks.load_longbench("hotpotqa", truncation="none", **meta)["test"]
    assert docs[0]["context_tokens_cut"] == 0 and docs[0]["context"].endswith(
        "TAIL-END"
    )
    with pytest.raises(
        ValueError, match="'truncation' must be one of middle, error, none"
    ):
        eval_tasks.load_longbench("hotpotqa", truncation="left", **meta)
    with pytest.raises(ValueError, match="does not fit in 10 tokens"):
        eval_tasks.load_longbench(
            "hotpotqa", **{**meta, "max_length": 54, "max_gen_toks": 44}
        )


def test_max_length_from_the_model_config(tiny_llama_dir: Path) -> None:
    tok = truncation.load_tokenizer(str(tiny_llama_dir))
    assert (
        truncation.resolve_max_length({"pretrained": str(tiny_llama_dir)}, tok) == 8192
    )
    assert truncation.resolve_max_length({"max_model_len": "512"}, tok) == 512


# --------------------------------------------------------------------------- #
# The smoke-set converter and `sealong eval`
# --------------------------------------------------------------------------- #
def test_multihop_to_longbench_shapes() -> None:
    hotpot = {
        "_id": "h1",
        "question": "Q?",
        "answer": "A",
        "context": [["T1", ["One.", " Two."]], ["T2", ["Three."]]],
    }
    assert multihop_to_longbench(hotpot) == {
        "_id": "h1",
        "input": "Q?",
        "context": "Passage 1:\nT1\nOne. Two.\nPassage 2:\nT2\nThree.\n",
        "answers": ["A"],
        "length": -1,
    }
    musique = {
        "id": "m1",
        "question": "Q?",
        "answer": "A",
        "answer_aliases": ["B"],
        "paragraphs": [{"title": "T", "paragraph_text": "P."}],
    }
    row = multihop_to_longbench(musique)
    assert row["answers"] == ["A", "B"] and row["context"] == "Passage 1:\nT\nP.\n"
    with pytest.raises(ValueError, match="expected a HotpotQA"):
        multihop_to_longbench({"question": "q"})


def test_sealong_eval_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "found_by_default", lambda: False)
    args = ["--model", "hf", "--tasks", "longbench_sealong"]
    assert discovery.lm_eval_argv(args) == [*args, "--include_path", str(TASK_DIR)]
    assert discovery.lm_eval_argv(["ls", "tasks"])[-1] == str(TASK_DIR)
    mine = [*args, "--include_path", "/my/tasks"]
    assert discovery.lm_eval_argv(mine) == mine
    assert discovery.lm_eval_argv(["--help"]) == ["--help"]
    monkeypatch.setattr(discovery, "found_by_default", lambda: True)
    assert discovery.lm_eval_argv(args) == args


def test_sealong_eval_task_dir(capsys: pytest.CaptureFixture[str]) -> None:
    from axolotl_sealong.cli.main import main

    assert main(["eval", "--task-dir"]) == 0
    assert capsys.readouterr().out.strip() == str(TASK_DIR)
    assert discovery.found_by_default() is False  # a source checkout here


def test_synth_prompt_strategy(tmp_path: Path) -> None:
    """``prompt_strategy`` metadata swaps the instruction; a typo names the keys."""
    default = eval_tasks.load_synth(synth_eval_path=str(SYNTH_FILE))["test"][0]
    assert eval_tasks.doc_to_text(default).endswith(
        INSTRUCTIONS["plan_and_solve"] + "\n"
    )
    direct = eval_tasks.load_synth(
        synth_eval_path=str(SYNTH_FILE), prompt_strategy="direct_answer"
    )["test"][0]
    assert eval_tasks.doc_to_text(direct) == build_user_prompt(
        direct["context"], direct["input"], "direct_answer"
    )
    with pytest.raises(ValueError, match=r"'prompt_strategy'.*direct_answer"):
        eval_tasks.load_synth(synth_eval_path=str(SYNTH_FILE), prompt_strategy="dirct")
