"""The openai engine's faults, sharding and resume, against a fake server.

The fake (tests/openai_fake.py, a stdlib server on 127.0.0.1) makes faults
happen on cue. The engine against a real ``vllm serve`` is tested in
tests/vllm_venv/test_openai_vllm_serve.py, inside the vllm venv.
"""

from __future__ import annotations

import socket
import time

import pytest
from builders import question_rows
from openai_fake import Behaviour, FakeServer, sample_text

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.pipeline import label, read_rows
from axolotl_sealong.sampling.base import SampleRequest, SamplingParams
from axolotl_sealong.sampling.factory import make_sampler
from axolotl_sealong.sampling.openai import OpenAISampler

FAST = dict(timeout=2.0, retries=2, backoff=0.05)


def _requests(count: int) -> list[SampleRequest]:
    return [SampleRequest(f"k{i}", f"question {i}?", 1000 + i) for i in range(count)]


def _params(n: int = 3) -> SamplingParams:
    return SamplingParams(n=n, temperature=0.7, top_p=0.95, max_new_tokens=8, seed=0)


def _engine(tokenizer_dir, urls, **kw) -> OpenAISampler:
    options = {**FAST, **kw}
    return OpenAISampler(str(tokenizer_dir), base_urls=urls, **options)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_n_samples_per_request_with_seed_and_settings(tiny_tokenizer_dir):
    with FakeServer() as server:
        engine = _engine(tiny_tokenizer_dir, server.url)
        assert engine.served_model == "fake-model" and engine.max_model_len == 4096
        out = dict(engine.sample(_requests(4), _params()))
        engine.close()
    assert len(out) == 4
    for req, texts in out.items():
        assert texts == [sample_text(req.seed, i, req.user_message) for i in range(3)]
    body = next(
        p for p in server.behaviour.payloads if p["seed"] == _requests(1)[0].seed
    )
    assert body["n"] == 3 and body["max_tokens"] == 8 and body["top_p"] == 0.95
    assert body["temperature"] == 0.7 and body["model"] == "fake-model"
    assert body["messages"] == [{"role": "user", "content": "question 0?"}]


def test_completions_api_sends_the_chat_template_token_ids(tiny_tokenizer_dir):
    from axolotl_sealong.sampling.base import chat_token_ids

    with FakeServer() as server:
        engine = _engine(tiny_tokenizer_dir, server.url, api="completions")
        out = dict(engine.sample(_requests(1), _params(2)))
    req = _requests(1)[0]
    ids = chat_token_ids(engine.tokenizer, req.user_message)
    assert server.behaviour.payloads[0]["prompt"] == ids
    assert out[req] == [sample_text(req.seed, i, ids) for i in range(2)]


def test_several_servers_share_the_questions(tiny_tokenizer_dir):
    with FakeServer() as a, FakeServer() as b:
        engine = _engine(tiny_tokenizer_dir, f"{a.url},{b.url}", concurrency=2)
        keys = [req.key for req, _ in engine.sample(_requests(12), _params())]
    assert sorted(keys) == sorted(r.key for r in _requests(12))
    assert a.behaviour.served + b.behaviour.served == 12
    assert a.behaviour.served > 0 and b.behaviour.served > 0


def test_http_500s_are_retried_with_backoff(tiny_tokenizer_dir):
    with FakeServer(Behaviour(fail_first=2)) as server:
        engine = _engine(tiny_tokenizer_dir, server.url, concurrency=1)
        out = dict(engine.sample(_requests(2), _params()))
    assert len(out) == 2 and server.behaviour.completions == 4


def test_a_dead_server_hands_its_questions_to_the_others(tiny_tokenizer_dir):
    with FakeServer(Behaviour(die_after=1)) as sick, FakeServer() as healthy:
        engine = _engine(tiny_tokenizer_dir, f"{sick.url},{healthy.url}")
        out = dict(engine.sample(_requests(10), _params()))
    assert len(out) == 10
    assert sick.behaviour.served <= 1


def test_a_hung_server_times_out_and_the_error_is_clear(tiny_tokenizer_dir):
    with FakeServer(Behaviour(hang_after=2)) as server:
        engine = _engine(
            tiny_tokenizer_dir, server.url, concurrency=1, timeout=0.5, retries=1
        )
        got = []
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="every sampling server failed") as err:
            for req, _ in engine.sample(_requests(5), _params()):
                got.append(req.key)
        assert time.monotonic() - start < 20
    assert got == ["k0", "k1"]
    assert "no answer within 0.5 s" in str(err.value)
    assert "rerun to continue" in str(err.value)


def test_a_bad_request_is_not_retried(tiny_tokenizer_dir):
    with FakeServer(Behaviour(bad_request=True)) as server:
        engine = _engine(tiny_tokenizer_dir, server.url, concurrency=1)
        with pytest.raises(RuntimeError, match="HTTP 400"):
            list(engine.sample(_requests(1), _params()))
    assert server.behaviour.completions == 1


def test_wrong_number_of_choices_is_an_error(tiny_tokenizer_dir):
    with FakeServer(Behaviour(choices=1)) as server:
        engine = _engine(tiny_tokenizer_dir, server.url)
        with pytest.raises(RuntimeError, match="1 choices for n=3"):
            list(engine.sample(_requests(1), _params()))


def test_unreachable_server_fails_at_start(tiny_tokenizer_dir):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(ConnectionError, match="cannot list models"):
        _engine(tiny_tokenizer_dir, url, retries=1)


def test_model_name_and_length_checks(tiny_tokenizer_dir):
    with FakeServer(Behaviour(max_model_len=64)) as server:
        with pytest.raises(ValueError, match="does not serve 'other'"):
            _engine(tiny_tokenizer_dir, server.url, served_model="other")
        with pytest.raises(ValueError, match="exceeds what the server"):
            _engine(tiny_tokenizer_dir, server.url, max_model_len=128)
        engine = _engine(tiny_tokenizer_dir, server.url)
        long = [SampleRequest("k", "word " * 80, 1)]
        with pytest.raises(ValueError, match="exceed max_model_len 64"):
            list(engine.sample(long, _params()))


def _rows(n: int) -> list[dict]:
    return question_rows(
        n, context="Zorvan{i} is a city.", question="Q{i}?", answers=["x"]
    )


def test_pipeline_resumes_after_the_server_dies(tiny_llama_dir, tmp_path):
    """The real failure story: the run stops, the cache keeps what finished."""
    with FakeServer(Behaviour(die_after=3)) as server:
        cfg = LabelConfig(
            model=str(tiny_llama_dir),  # the pipeline reads its config for limits
            sampler="openai",
            openai_base_urls=server.url,
            openai_concurrency=1,
            openai_retries=1,
            openai_backoff=0.05,
            openai_timeout=2,
            num_samples=3,
            utility="rouge_l",
            cache_dir=str(tmp_path / "cache"),
        )
        with pytest.raises(RuntimeError, match="every sampling server failed"):
            label(cfg, _rows(6), tmp_path / "a", progress=False)
    lines = list((tmp_path / "cache").glob("*/samples.jsonl"))[0].read_text()
    assert len(lines.splitlines()) == 3
    with FakeServer() as server:
        cfg = cfg.model_copy(update={"openai_base_urls": server.url})
        res = label(cfg, _rows(6), tmp_path / "b", progress=False)
        assert server.behaviour.served == 3
    assert res.counts["cache_hits"] == 3 and res.counts["sampled"] == 3
    assert len(read_rows(tmp_path / "b" / "scored.jsonl")) == 6


def test_openai_refuses_a_local_adapter(tiny_tokenizer_dir):
    with pytest.raises(ValueError, match="serve the adapter there"):
        make_sampler(
            "openai", str(tiny_tokenizer_dir), adapter="/x", base_urls="http://x/v1"
        )
