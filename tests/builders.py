"""Builders the tests share: question rows, the files that hold them, recipes.

Question rows are ``{"context", "question", "answers"}`` dicts numbered ``i``;
every text is a template whose ``{i}`` is the row's number (or a function of
``i``), so a test states only what differs from the default question::

    question_rows(3)  # "What is the capital of Zorvan0?" ... answers ["Kel0"]
    question_rows(4, context="Passage 1:\\nZorvan{i} was founded by Kel{i}.",
                  question="Who founded Zorvan{i}?")
    river_rows(4, passages=6, asked=3)  # a multi-passage context

Recipes are Axolotl YAML mappings: :func:`recipe` is the bare mapping
(``base_model`` and ``datasets`` plus any keys), :func:`training_recipe` the
plugin's 2-step LoRA run of a tiny model on CPU (:data:`TINY_LORA_TRAINING`),
:func:`orpo_pairs_recipe` an ORPO run on ready preference pairs.

Also: :func:`subprocess_env`, the environment a child Python runs this
checkout in, and the nodes (:data:`H100_NODE`, :data:`CPU_NODE`) that
:func:`validate` checks a config for with Axolotl's validator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ["axolotl_sealong.SeaLongPlugin"]
SELF_LABEL = "axolotl_sealong.self_label"

# LoRA r=4 on every linear, one row per step, two steps, float32 on the CPU.
TINY_LORA_TRAINING: dict[str, Any] = {
    "adapter": "lora",
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "lora_target_linear": True,
    "micro_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "num_epochs": 1,
    "max_steps": 2,
    "optimizer": "adamw_torch",
    "learning_rate": 1e-4,
    "bf16": False,
    "fp16": False,
}

# --------------------------------------------------------------------------- #
# Question rows
# --------------------------------------------------------------------------- #
Text = str | Callable[[int], str]

CAPITAL_CONTEXT = "Passage 1:\nThe capital of Zorvan{i} is Kel{i}."
CAPITAL_QUESTION = "What is the capital of Zorvan{i}?"


def _fill(text: Any, i: int) -> Any:
    if callable(text):
        return text(i)
    return text.format(i=i) if isinstance(text, str) else text


def question_rows(
    n: int = 3,
    *,
    start: int = 0,
    context: Text = CAPITAL_CONTEXT,
    question: Text = CAPITAL_QUESTION,
    answers: Sequence[Text] | Text | None = ("Kel{i}",),
    **columns: Any,
) -> list[dict[str, Any]]:
    """Rows ``start .. start + n - 1``: ``{i}`` in each text is the row's number.

    ``answers``: a sequence of texts (a list in the row), one text (a plain
    string in the row, which users may also write) or None (no answers
    column). ``columns``: more columns, texts or other values, after these.
    """
    rows = []
    for i in range(start, start + n):
        row: dict[str, Any] = {
            "context": _fill(context, i),
            "question": _fill(question, i),
        }
        if isinstance(answers, str) or callable(answers):
            row["answers"] = _fill(answers, i)
        elif answers is not None:
            row["answers"] = [_fill(a, i) for a in answers]
        row.update({k: _fill(v, i) for k, v in columns.items()})
        rows.append(row)
    return rows


def river_rows(n: int, passages: int = 4, asked: int = 2) -> list[dict[str, Any]]:
    """Multi-passage rows: "Zorvan{i}-{j} lies on the river Kel{j}." for each
    passage j; the question asks for passage ``asked``'s river."""
    return question_rows(
        n,
        context=lambda i: "\n".join(
            f"Passage {j}:\nZorvan{i}-{j} lies on the river Kel{j}."
            for j in range(passages)
        ),
        question=f"Which river does Zorvan{{i}}-{asked} lie on?",
        answers=[f"Kel{asked}"],
    )


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    """One ``json.dumps`` line per row (rows need not be objects: bad input)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- #
# Recipes
# --------------------------------------------------------------------------- #
def self_label_dataset(path: Path | str, **keys: Any) -> dict[str, Any]:
    """A ``datasets:`` entry the plugin labels (``path`` as given, str'd)."""
    return {"path": str(path), "ds_type": "json", "type": SELF_LABEL, **keys}


def recipe(
    model: Path | str | None, datasets: Sequence[dict[str, Any]], **keys: Any
) -> dict[str, Any]:
    """``base_model`` (left out when ``model`` is None), ``datasets`` and
    ``keys``, in that order."""
    head = {} if model is None else {"base_model": str(model)}
    return {**head, "datasets": list(datasets), **keys}


def training_recipe(
    tmp: Path, model: Path | str, questions: Path, **keys: Any
) -> dict[str, Any]:
    """The plugin labeling ``questions`` and training a 2-step LoRA on the CPU.

    Samples are cached in ``tmp/samples``, Axolotl prepares into
    ``tmp/prepared`` and writes to ``tmp/out``; ``keys`` add or override.
    """
    return (
        recipe(
            model,
            [self_label_dataset(questions, split="train")],
            plugins=PLUGINS,
            sealong_cache_dir=str(tmp / "samples"),
            chat_template="tokenizer_default",
            sequence_len=1024,
            **TINY_LORA_TRAINING,
            dataset_num_proc=1,
            dataset_prepared_path=str(tmp / "prepared"),
            output_dir=str(tmp / "out"),
            save_safetensors=True,
        )
        | keys
    )


# What ORPO needs on top of training_recipe; SFT runs with Axolotl's LoRA
# kernels off.
ORPO: dict[str, Any] = {"rl": "orpo", "orpo_alpha": 0.1, "remove_unused_columns": False}
NO_LORA_KERNELS: dict[str, Any] = {
    f"lora_{k}_kernel": False for k in ("mlp", "qkv", "o", "embedding")
}


def e2e_recipe(
    tmp: Path, model: Path | str, mode: str, questions: int = 4, **extra: Any
) -> Path:
    """The end-to-end recipe, written to ``tmp/<mode>.yml``: ``questions``
    river rows (6 passages, the 4th asked) in ``tmp/questions.jsonl``, N=3,
    16 new tokens, then ORPO (``mode`` orpo) or SFT (sft); ``extra`` last."""
    path = write_jsonl(
        tmp / "questions.jsonl", river_rows(questions, passages=6, asked=3)
    )
    cfg = training_recipe(
        tmp, model, path, sealong_num_samples=3, sealong_max_new_tokens=16
    )
    cfg |= ORPO if mode == "orpo" else NO_LORA_KERNELS
    return write_yaml(tmp / f"{mode}.yml", cfg | extra)


def orpo_pairs_recipe(
    tmp: Path, model: Path | str, rows: Sequence[Any], **keys: Any
) -> Path:
    """ORPO on ready preference pairs (``prompt``/``chosen``/``rejected``
    ``rows``, written to ``tmp/pairs.jsonl``), the plugin listed, the tiny LoRA
    run with 256-token sequences, output in ``tmp/out``; ``keys`` add or
    override. Written to ``tmp/orpo.yml``."""
    data = write_jsonl(tmp / "pairs.jsonl", rows)
    cfg = recipe(
        model,
        [{"path": str(data), "ds_type": "json", "split": "train"}],
        plugins=PLUGINS,
        **ORPO,
        chat_template="tokenizer_default",
        sequence_len=256,
        **TINY_LORA_TRAINING,
        output_dir=str(tmp / "out"),
    )
    return write_yaml(tmp / "orpo.yml", cfg | keys)


def write_yaml(path: Path, mapping: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(mapping))
    return path


# --------------------------------------------------------------------------- #
# Subprocesses
# --------------------------------------------------------------------------- #
def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child Python that runs this checkout
    (``PYTHONPATH`` is the repository root, replacing any), offline, with no
    telemetry and TRL's experimental-feature warning silenced; ``extra`` last."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        **extra,
    }


# --------------------------------------------------------------------------- #
# Nodes a config is validated for (Axolotl's capabilities)
# --------------------------------------------------------------------------- #
H100_NODE: dict[str, Any] = {
    "bf16": True,
    "fp8": True,
    "tf32": True,
    "n_gpu": 8,
    "compute_capability": "sm_90",
}
CPU_NODE: dict[str, Any] = {
    "bf16": False,
    "fp8": False,
    "tf32": False,
    "n_gpu": 1,
    "compute_capability": None,
}


def validate(cfg: Any, node: dict[str, Any]) -> Any:
    """Axolotl's ``validate_config`` of ``cfg`` (a ``DictDefault``, plugins
    prepared) as ``node`` would see it, with torch 2.13.0 there."""
    from axolotl.utils.config import validate_config

    return validate_config(
        cfg, capabilities=dict(node), env_capabilities={"torch_version": "2.13.0"}
    )
