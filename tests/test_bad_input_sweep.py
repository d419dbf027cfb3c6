"""The bad-input sweep: every input a user controls, each bad one a clear error.

Rows, files, YAML, CLI flags, model / embedder / adapter names, server URLs.
Each case runs ``sealong`` in-process and must exit 2 with one
``sealong <command>: error: ...`` line that names the field or file and the
value, with no traceback, and without loading a model (the model loaders are
replaced by ones that fail the test if reached).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import recipe, self_label_dataset, write_jsonl, write_yaml

from axolotl_sealong.cli.main import main

GOOD = {"context": "Passage 1:\nKel is in Zorvan.", "question": "Where is Kel?"}


def _label(tmp: Path, model: Path, *extra: str, rows: list[Any] | None = None):
    data = write_jsonl(tmp / "q.jsonl", rows if rows is not None else [GOOD])
    return [
        "label",
        "--data",
        str(data),
        "--out",
        str(tmp / "out"),
        "--model",
        str(model),
        "--cache-dir",
        str(tmp / "cache"),
        "--utility",
        "rouge_l",
        "--no-progress",
        *extra,
    ]


def _recipe(tmp: Path, model: Path | None, *flags: str, **keys: Any) -> list[str]:
    """``sealong label --config`` on a recipe of GOOD (no base_model if
    ``model`` is None), ``keys`` added, then ``flags``."""
    data = write_jsonl(tmp / "q.jsonl", [GOOD])
    path = write_yaml(
        tmp / "recipe.yml",
        recipe(
            model,
            [self_label_dataset(data)],
            sealong_utility="rouge_l",
            sealong_cache_dir=str(tmp / "cache"),
            **keys,
        ),
    )
    return ["label", "--config", str(path), "--out", str(tmp / "out"), *flags]


def _config_text(tmp: Path, text: str) -> list[str]:
    path = tmp / "recipe.yml"
    path.write_text(text)
    return ["label", "--config", str(path), "--out", str(tmp / "out")]


def _folder(tmp: Path, name: str, files: dict[str, Any] | None = None) -> str:
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    for fname, content in (files or {}).items():
        (folder / fname).write_text(json.dumps(content))
    return str(folder)


def _file(tmp: Path, name: str, text: str = "x") -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


Case = Callable[[Path, Path], tuple[list[str], list[str]]]

CASES: dict[str, Case] = {
    # ---- rows
    "answers is an int": lambda t, m: (
        _label(t, m, rows=[{**GOOD, "answers": 5}]),
        ["answers field 'answers' is 5 in row 0", "list of strings"],
    ),
    "answers holds null and an int": lambda t, m: (
        _label(t, m, rows=[GOOD, {**GOOD, "answers": [None, 1]}]),
        ["is [None, 1] in row 1"],
    ),
    "context column missing": lambda t, m: (
        _label(t, m, rows=[{"ctx": "c", "question": "q"}]),
        ["context field 'context' is missing", "sealong_context_field"],
    ),
    "question not a string": lambda t, m: (
        _label(t, m, rows=[{"context": "c", "question": 7}]),
        ["question field 'question' is empty or not a string", "row 0"],
    ),
    "a row that is not an object": lambda t, m: (
        _label(t, m, rows=[GOOD, [1, 2]]),
        ["q.jsonl:2: expected a JSON object per row, got list [1, 2]"],
    ),
    "empty data file": lambda t, m: (
        _label(t, m, rows=[]),
        ["q.jsonl: the file has no rows"],
    ),
    # ---- files
    "--data missing": lambda t, m: (
        [*_label(t, m)[:2], str(t / "nope.jsonl"), *_label(t, m)[3:]],
        ["nope.jsonl: no such file"],
    ),
    "--data is a folder": lambda t, m: (
        [*_label(t, m)[:2], str(t), *_label(t, m)[3:]],
        [f"{t} is a folder: give a .jsonl"],
    ),
    "--data with a bad JSON line": lambda t, m: (
        [*_label(t, m)[:2], _file(t, "bad.jsonl", '{"a": 1}\n{oops\n')]
        + _label(t, m)[3:],
        ["bad.jsonl:2: not valid JSON"],
    ),
    "--data .gz that is not gzip": lambda t, m: (
        [*_label(t, m)[:2], _file(t, "q.jsonl.gz", "plain"), *_label(t, m)[3:]],
        ["q.jsonl.gz: cannot be read as UTF-8 JSON"],
    ),
    "--config missing": lambda t, m: (
        ["label", "--config", str(t / "nope.yml"), "--out", str(t / "o")],
        ["--config", "nope.yml: no such file"],
    ),
    "--config YAML is a list": lambda t, m: (
        _config_text(t, "- base_model: x\n"),
        ["the YAML is a list, not a mapping"],
    ),
    "--config is not YAML": lambda t, m: (
        _config_text(t, "base_model: [oops\n"),
        ["recipe.yml: not valid YAML"],
    ),
    "--config without a self_label dataset": lambda t, m: (
        _config_text(t, f"base_model: {m}\ndatasets:\n  - path: x\n    type: alpaca\n"),
        ["no datasets: entry has type: axolotl_sealong.self_label"],
    ),
    "self_label dataset without a path": lambda t, m: (
        _config_text(
            t,
            f"base_model: {m}\ndatasets:\n  - type: axolotl_sealong.self_label\n",
        ),
        ["datasets[0] (type: axolotl_sealong.self_label) has no path"],
    ),
    "--out is a file": lambda t, m: (
        [*_label(t, m)[:4], _file(t, "out.txt"), *_label(t, m)[5:]],
        ["the output folder (--out)", "out.txt' is a file: give a folder"],
    ),
    "--cache-dir is a file": lambda t, m: (
        _label(t, m, "--cache-dir", _file(t, "cache.txt")),
        ["cache_dir (--cache-dir)", "cache.txt' is a file"],
    ),
    # ---- YAML keys and values
    "misspelled key": lambda t, m: (
        _recipe(t, m, sealong_num_sample=4),
        ["sealong_num_sample (did you mean sealong_num_samples?)"],
    ),
    "temperature 0 in YAML": lambda t, m: (
        _recipe(t, m, sealong_temperature=0),
        ["sealong_temperature (--temperature) = 0", "set temperature > 0"],
    ),
    "num_samples not a number": lambda t, m: (
        _recipe(t, m, sealong_num_samples="eight"),
        ["sealong_num_samples (--num-samples) = 'eight'", "valid integer"],
    ),
    "sequence_len not a number": lambda t, m: (
        _recipe(t, m, sequence_len="long"),
        ["sequence_len: 'long' is not a positive integer"],
    ),
    "expand with batched questions": lambda t, m: (
        _recipe(t, m, sealong_hf_method="expand", sealong_hf_batch_questions=2),
        ["hf_method expand decodes one question at a time", "hf_batch_questions"],
    ),
    "recipe without base_model": lambda t, m: (
        _recipe(t, None),
        ["base_model is not set", "add `base_model:", "`sealong_model:` / --model"],
    ),
    "base_model empty": lambda t, m: (
        _recipe(t, m, base_model=""),
        ["base_model is not set (got '')", "add `base_model:"],
    ),
    "sealong_openai_backoff .nan": lambda t, m: (
        _recipe(t, m, sealong_openai_backoff=float("nan")),
        ["sealong_openai_backoff (--openai-backoff) = nan: must be a finite number"],
    ),
    "sealong_vllm_gpu_memory_utilization .inf": lambda t, m: (
        _recipe(t, m, sealong_vllm_gpu_memory_utilization=float("inf")),
        ["sealong_vllm_gpu_memory_utilization", "= inf", "a fraction in (0, 1]"],
    ),
    # ---- CLI flags
    "--temperature nan": lambda t, m: (
        _label(t, m, "--temperature", "nan"),
        ["sealong_temperature (--temperature) = nan: must be a finite number"]
        + ["use a number > 0 (the paper uses 0.7)"],
    ),
    "--top-p nan": lambda t, m: (
        _label(t, m, "--top-p", "nan"),
        ["sealong_top_p (--top-p) = nan: must be a finite number", "in (0, 1]"],
    ),
    "--temperature inf": lambda t, m: (
        _label(t, m, "--temperature", "inf"),
        ["sealong_temperature (--temperature) = inf: must be a finite number"],
    ),
    "--margin -inf": lambda t, m: (
        _label(t, m, "--margin=-inf"),
        ["sealong_margin (--margin) = -inf: must be a finite number", "gap >= 0"],
    ),
    "--openai-timeout inf": lambda t, m: (
        _label(t, m, "--openai-timeout", "inf"),
        ["sealong_openai_timeout (--openai-timeout) = inf", "seconds > 0"],
    ),
    "--vllm-server-start-timeout nan": lambda t, m: (
        _label(t, m, "--vllm-server-start-timeout", "nan"),
        ["sealong_vllm_server_start_timeout", "= nan: must be a finite number"],
    ),
    "--vllm-server-gpu-release-timeout infinity": lambda t, m: (
        _label(t, m, "--vllm-server-gpu-release-timeout", "infinity"),
        ["sealong_vllm_server_gpu_release_timeout", "= inf: must be a finite"],
    ),
    "--max-questions 0": lambda t, m: (
        _label(t, m, "--max-questions", "0"),
        ["sealong_max_questions (--max-questions) = 0: must be >= 1"],
    ),
    "--dtype fp16": lambda t, m: (
        _label(t, m, "--dtype", "fp16"),
        ["sealong_dtype (--dtype) = 'fp16'", "float16"],
    ),
    "--device gpu": lambda t, m: (
        _label(t, m, "--device", "gpu"),
        ["sealong_device (--device) = 'gpu'", "cuda:N"],
    ),
    "--max-model-len below --max-new-tokens": lambda t, m: (
        _label(t, m, "--max-model-len", "100", "--max-new-tokens", "200"),
        ["max_model_len 100 leaves no room", "--max-new-tokens"],
    ),
    # ---- model, embedder and adapter names
    "--model folder that does not exist": lambda t, m: (
        _label(t, Path("/no/such/model")),
        ["model (sealong_model / --model) '/no/such/model': no such folder"],
    ),
    "--model unknown embedded name": lambda t, m: (
        _label(t, Path("embedded:smollm3")),
        ["'embedded:smollm3' is not an embedded name"],
    ),
    "--model hub id not cached offline": lambda t, m: (
        _label(t, Path("someorg/not-a-cached-model")),
        ["'someorg/not-a-cached-model' is not a local folder", "HF_HUB_OFFLINE"],
    ),
    "--model folder that is no model": lambda t, m: (
        _label(t, Path(_folder(t, "empty"))),
        ["is a folder without config.json or tokenizer_config.json"],
    ),
    "--embedder folder that does not exist": lambda t, m: (
        _label(t, m, "--utility", "embedding", "--embedder", "/no/embedder"),
        ["embedder (sealong_embedder / --embedder) '/no/embedder'"],
    ),
    "--embedder unknown embedded name": lambda t, m: (
        _label(t, m, "--utility", "embedding", "--embedder", "embedded:bge-small"),
        ["embedder (sealong_embedder / --embedder) 'embedded:bge-small' is not an"],
    ),
    "--embedder with remote code, not trusted": lambda t, m: (
        _label(
            t,
            m,
            "--utility",
            "embedding",
            "--embedder",
            _folder(
                t, "my-embedder", {"config.json": {"auto_map": {"AutoModel": "x"}}}
            ),
        ),
        ["my-embedder' runs code from its repository", "embedder_trust_remote_code"],
    ),
    "--adapter folder that does not exist": lambda t, m: (
        _label(t, m, "--adapter", "/no/adapter"),
        ["adapter (sealong_adapter / --adapter) '/no/adapter': no such folder"],
    ),
    "--adapter folder that is no adapter": lambda t, m: (
        _label(t, m, "--adapter", _folder(t, "not-an-adapter")),
        ["not-an-adapter' is a folder without adapter_config.json"],
    ),
    # ---- engines and server URLs
    "--sampler openai with --adapter": lambda t, m: (
        _label(
            t,
            m,
            *("--sampler", "openai", "--openai-base-urls", "http://127.0.0.1:9/v1"),
            *("--adapter", _folder(t, "lora", {"adapter_config.json": {}})),
        ),
        ["sampler openai samples whatever the server serves", "--openai-model"],
    ),
    "--openai-base-urls without a scheme": lambda t, m: (
        _label(t, m, "--sampler", "openai", "--openai-base-urls", "localhost:8000"),
        ["sealong_openai_base_urls (--openai-base-urls) = 'localhost:8000'"],
    ),
    "--sampler openai without URLs": lambda t, m: (
        _label(t, m, "--sampler", "openai"),
        ["sampler openai needs openai_base_urls"],
    ),
    "server that is not there": lambda t, m: (
        _label(
            t, m, "--sampler", "openai", "--openai-base-urls", "http://127.0.0.1:9/v1"
        ),
        ["cannot list models at http://127.0.0.1:9/v1/models", "/v1"],
    ),
    # ---- sealong bench
    "bench --prompt-tokens that are not numbers": lambda t, m: (
        ["bench", "sampling", "--model", str(m), "--prompt-tokens", "2k"],
        ["--prompt-tokens '2k': give prompt lengths in tokens"],
    ),
    # ---- sealong data
    "data --tokenizer that does not exist": lambda t, m: (
        ["data", "synth", "--out", str(t / "s.jsonl"), "--num", "2"]
        + ["--tokenizer", "/no/tokenizer"],
        ["--tokenizer '/no/tokenizer': no such folder"],
    ),
}


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reaching a model loader fails the test: errors must come first."""
    import sentence_transformers
    import transformers

    import axolotl_sealong.core.pipeline as pipeline

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before the bad input was caught")

    monkeypatch.setattr(pipeline, "_open_sampler", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", refuse)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(
    case: str,
    tiny_llama_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model_loads: None,
) -> None:
    argv, expected = CASES[case](tmp_path, tiny_llama_dir)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"sealong {argv[0]}: error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    # pydantic's wording never leaks through, nor a field called "settings"
    assert "Value error" not in lines[0] and "--settings" not in lines[0]


def test_the_sweep_is_wide_enough() -> None:
    assert len(CASES) >= 40


def test_every_float_setting_refuses_nan_and_infinity() -> None:
    """A float setting added later is covered too (the CLI cases above show
    the message as a user sees it)."""
    from pydantic import ValidationError

    from axolotl_sealong.core.config import LabelConfig

    floats = [
        name
        for name, info in LabelConfig.model_fields.items()
        if float in (info.annotation, *getattr(info.annotation, "__args__", ()))
    ]
    assert len(floats) >= 8, floats
    for name in floats:
        for value in ("nan", "inf", "-inf"):
            with pytest.raises(ValidationError, match="must be a finite number"):
                LabelConfig(**{name: float(value)})


@pytest.mark.parametrize("how", ["--model", "sealong_model"])
def test_a_recipe_without_base_model_labels_the_model_it_names(
    how: str, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """The base_model error leaves a recipe that names its sampling model
    (and --data with --model, no recipe: every other case here) alone."""
    from axolotl_sealong.cli.label import config_from_args
    from axolotl_sealong.cli.main import build_parser

    if how == "--model":
        argv = _recipe(tmp_path, None, "--model", str(tiny_llama_dir))
    else:
        argv = _recipe(tmp_path, None, sealong_model=str(tiny_llama_dir))
    cfg, raw = config_from_args(build_parser().parse_args(argv))
    assert raw is not None and "base_model" not in raw
    assert cfg.model == str(tiny_llama_dir)


def test_argparse_errors_are_also_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["label", "--data", "x", "--out", str(tmp_path), "--num-samples", "abc"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --num-samples: invalid int value: 'abc'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_check_estimates_are_finite_and_positive(tmp_path, capsys, value) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check", str(tmp_path / "r.yml"), "--prefill-tps", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--prefill-tps: must be a finite number > 0, got {value}" in err


def test_the_console_script_prints_no_traceback_and_v_shows_it(tmp_path) -> None:
    """The real entry point, as a user runs it: -v is for debugging."""
    data = write_jsonl(tmp_path / "q.jsonl", [{**GOOD, "answers": 5}])
    argv = ["label", "--data", str(data), "--out", str(tmp_path / "o")]
    cmd = [sys.executable, "-m", "axolotl_sealong.cli.main"]
    quiet = subprocess.run([*cmd, *argv], capture_output=True, text=True)
    assert quiet.returncode == 2
    assert "Traceback" not in quiet.stderr
    assert "sealong label: error: answers field 'answers' is 5" in quiet.stderr
    loud = subprocess.run([*cmd, "-v", *argv], capture_output=True, text=True)
    assert loud.returncode != 0 and "Traceback" in loud.stderr
