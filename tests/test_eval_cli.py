"""`sealong eval` / `lm_eval` as subprocesses: `--model hf` on a tiny random Llama.

One run covers the group, narrativeqa and sealong_synth with --apply_chat_template
on the local fixtures, a context length small enough that the longer contexts
are cut in the middle, and the logged samples checked against the tokenizer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eval_support import GROUP_TASKS, LONGBENCH_DIR, SYNTH_FILE

from axolotl_sealong.core.metrics import extract_final_answer, sub_em
from axolotl_sealong.core.prompts import build_user_prompt

REPO = Path(__file__).resolve().parent.parent
MAX_LENGTH = 700
MAX_GEN_TOKS = 4


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p
    )
    return env


def _samples(out: Path, task: str) -> list[dict[str, Any]]:
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def hf_run(
    tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("lm_eval_out")
    cmd = [
        sys.executable, "-m", "axolotl_sealong.cli.main", "eval",
        "--model", "hf",
        "--model_args",
        f"pretrained={tiny_llama_dir},dtype=float32,max_length={MAX_LENGTH}",
        "--metadata", json.dumps({"max_gen_toks": MAX_GEN_TOKS}),
        "--tasks", "longbench_sealong,longbench_sealong_narrativeqa,sealong_synth",
        "--apply_chat_template",
        "--gen_kwargs", f"max_gen_toks={MAX_GEN_TOKS}",
        "--device", "cpu",
        "--limit", "2",
        "--output_path", str(out),
        "--log_samples",
    ]  # fmt: skip
    env = _env(
        SEALONG_LONGBENCH_DIR=str(LONGBENCH_DIR), SEALONG_SYNTH_EVAL=str(SYNTH_FILE)
    )
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out, proc


def test_hf_samples(
    hf_run: tuple[Path, subprocess.CompletedProcess[str]], tiny_llama_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    out, _ = hf_run
    n_cut = 0
    for task in (*GROUP_TASKS, "longbench_sealong_narrativeqa", "sealong_synth"):
        for sample in _samples(out, task):
            doc = sample["doc"]
            args = sample["arguments"]["gen_args_0"]
            user = build_user_prompt(doc["context"], doc["input"], "plan_and_solve")
            chat = [{"role": "user", "content": user}]
            rendered = tok.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=True
            )
            assert args["arg_0"] == rendered
            assert args["arg_1"] == {
                "until": [],
                "do_sample": False,
                "temperature": 0.0,
                "max_gen_toks": MAX_GEN_TOKS,
            }
            n_prompt = len(tok(rendered, add_special_tokens=False)["input_ids"])
            assert n_prompt <= MAX_LENGTH - MAX_GEN_TOKS
            if doc["context_tokens_cut"]:
                n_cut += 1
            output = sample["resps"][0][0]
            answers = doc["answers"]
            assert sample["sub_em"] == sub_em(output, answers)
            assert sample["sub_em_extracted"] == sub_em(
                extract_final_answer(output), answers
            )
            assert sample["output_tokens"] == len(
                tok(output, add_special_tokens=False)["input_ids"]
            )
    assert n_cut >= 2  # the MuSiQue contexts (~2.5K tokens) were cut
