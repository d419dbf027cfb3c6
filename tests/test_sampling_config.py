"""Engine settings: validation before any model loads, flags, auto choice, ranks."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from builders import write_jsonl

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.integrations.axolotl.distributed import (
    RankInfo,
    label_on_ranks,
    merge_label_dirs,
    rank_info,
    rank_settings,
    sampling_role,
    shard,
)
from axolotl_sealong.sampling.factory import (
    make_sampler,
    resolve_engine,
)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"sampler": "sglang"}, "sampler"),
        ({"sampler": "openai"}, "needs openai_base_urls"),
        ({"openai_base_urls": "127.0.0.1:8000"}, "http"),
        ({"openai_concurrency": 0}, "must be >= 1"),
        ({"openai_timeout": 0}, "must be > 0"),
        ({"openai_retries": -1}, "must be >= 0"),
        ({"vllm_gpu_memory_utilization": 1.5}, r"\(0, 1\]"),
        ({"vllm_tensor_parallel_size": 0}, "must be >= 1"),
        ({"hf_batch_questions": 0}, "must be >= 1"),
        ({"hf_method": "beam"}, "shared_prefix"),
        ({"hf_kv_cache_dtype": "int8"}, "bfloat16"),
    ],
)
def test_bad_engine_settings_fail_in_the_config(settings, match):
    with pytest.raises(ValueError, match=match):
        LabelConfig(**settings)


def test_url_lists_from_yaml_and_flags():
    cfg = LabelConfig.from_yaml_dict(
        {
            "sealong_sampler": "openai",
            "sealong_openai_base_urls": ["http://127.0.0.1:1/v1/", "http://h:2/v1"],
        }
    )
    assert cfg.openai_base_urls == "http://127.0.0.1:1/v1,http://h:2/v1"


def test_cli_flags_for_engine_settings(tmp_path):
    import argparse

    from axolotl_sealong.cli.label import add_config_flags, config_from_args

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--data")
    add_config_flags(parser)
    args = parser.parse_args(
        [
            "--sampler",
            "vllm",
            "--vllm-enforce-eager",
            "true",
            "--vllm-enable-prefix-caching",
            "false",
            "--vllm-gpu-memory-utilization",
            "0.5",
        ]
    )
    cfg, _ = config_from_args(args)
    assert cfg.sampler == "vllm" and cfg.vllm_enforce_eager is True
    assert cfg.vllm_enable_prefix_caching is False
    assert cfg.vllm_gpu_memory_utilization == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--vllm-enforce-eager", "maybe"])


def test_auto_is_hf_on_cpu_and_unknown_engines_are_named():
    assert resolve_engine("auto") == "hf"  # no GPU on this machine
    with pytest.raises(ValueError, match="auto, hf, vllm, openai"):
        resolve_engine("tgi")


def test_vllm_missing_gives_a_clear_error(tiny_llama_dir):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="scripts/setup_vllm.sh"):
        make_sampler("vllm", str(tiny_llama_dir))


def test_rank_info_and_roles():
    assert rank_info({}) == RankInfo(0, 1, 0)
    info = rank_info({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert info == RankInfo(3, 4, 1) and not info.is_main
    with pytest.raises(ValueError, match="outside"):
        rank_info({"RANK": "4", "WORLD_SIZE": "4"})
    assert sampling_role("hf", RankInfo()) == "all"
    assert sampling_role("hf", info) == "shard"
    assert sampling_role("vllm", info) == "leader"
    assert sampling_role("openai", info) == "leader"
    assert sampling_role("vllm_server", info) == "leader"  # the lock holder serves
    items = list(range(10))
    shards = [shard(items, RankInfo(r, 3, r)) for r in range(3)]
    assert sorted(sum(shards, [])) == items and shards[1] == [1, 4, 7]


def _fake_label(rows: list[int], calls: list) -> object:
    def run(info: RankInfo, out: Path) -> None:
        mine = shard(rows, info)
        calls.append((info.rank, mine))
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "sft.jsonl", [{"q": q, "rank": info.rank} for q in mine])

    return run


def _merge_sft(parts, out):
    text = "".join((part / "sft.jsonl").read_text() for part in parts)
    (out / "sft.jsonl").write_text(text)


def test_ranks_share_the_work_without_duplicating_it(tmp_path):
    rows = list(range(7))
    calls: list = []
    run = _fake_label(rows, calls)
    threads = [
        threading.Thread(
            target=label_on_ranks,
            args=(tmp_path, run, _merge_sft, RankInfo(r, 3, r), 60),
        )
        for r in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    merged = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert sorted(m["q"] for m in merged) == rows  # each question exactly once
    assert sorted(c[0] for c in calls) == [0, 1, 2]
    assert {m["rank"] for m in merged} == {0, 1, 2}


def _write_part(part: Path, scored: list[dict]) -> None:
    """A shard folder as pipeline.label writes it, from its scored rows."""
    from axolotl_sealong.core.pipeline import row_sources

    part.mkdir(parents=True)
    sft_of, pref_of = row_sources(scored)
    files = {
        "scored.jsonl": scored,
        "sft.jsonl": [{"messages": scored[i]["key"]} for i in sft_of],
        "preference.jsonl": [{"chosen": scored[i]["key"]} for i in pref_of],
    }
    for name, rows in files.items():
        write_jsonl(part / name, rows)
    (part / "diagnostics.json").write_text(json.dumps({"counts": {"x": 1}}))


def test_ordered_merge_puts_every_row_back_with_its_question(tmp_path):
    def scored(key, index, chosen="ok", skip=None):
        return {
            "key": key,
            "index": index,
            "samples": [chosen, "other"],
            "chosen": 0,
            "skip_reason": skip,
            "answers": None,
        }

    # order: a b c d e f; e was skipped as overlong (no row); rank 1 also has
    # a question without a pair (c) and one whose chosen sample is blank (d)
    _write_part(tmp_path / "r0", [scored("a", 0), scored("c", 1, skip="margin")])
    _write_part(
        tmp_path / "r1",
        [scored("b", 0), scored("d", 1, " ", "empty_chosen"), scored("f", 2)],
    )
    _write_part(tmp_path / "r2", [])  # a rank whose shard was empty
    parts = [tmp_path / f"r{r}" for r in range(3)]
    merge_label_dirs(parts, tmp_path / "out", order=list("abcdef"))
    out = {
        name: [
            json.loads(x) for x in (tmp_path / "out" / name).read_text().splitlines()
        ]
        for name in ("scored.jsonl", "sft.jsonl", "preference.jsonl")
    }
    assert [(r["key"], r["index"]) for r in out["scored.jsonl"]] == [
        ("a", 0),
        ("b", 1),
        ("c", 2),
        ("d", 3),
        ("f", 5),
    ]
    assert [r["messages"] for r in out["sft.jsonl"]] == ["a", "b", "c", "f"]
    assert [r["chosen"] for r in out["preference.jsonl"]] == ["a", "b", "f"]
    diag = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    assert diag["counts"] == {"x": 3}
    with pytest.raises(ValueError, match="not in the order"):
        merge_label_dirs(parts, tmp_path / "bad", order=list("abc"))


def test_an_empty_shard_writes_empty_files_without_a_model(
    tiny_llama_dir, tmp_path, monkeypatch
):
    from axolotl_sealong.core import pipeline

    def no_model(cfg, *args):
        raise AssertionError("the sampling model was loaded for an empty shard")

    monkeypatch.setattr(pipeline, "_open_sampler", no_model)
    monkeypatch.setattr(pipeline, "prompt_limits", lambda cfg: (None, 4096))
    # a real folder (label checks it exists), never loaded: both loaders fail
    cfg = LabelConfig(model=str(tiny_llama_dir), cache_dir=str(tmp_path / "c"))
    res = pipeline.label(cfg, [], tmp_path / "part", allow_empty=True, progress=False)
    assert res.counts["questions"] == 0
    for name in ("sft.jsonl", "preference.jsonl", "scored.jsonl"):
        assert (tmp_path / "part" / name).read_text() == ""
    with pytest.raises(ValueError, match="no rows"):
        pipeline.label(cfg, [], tmp_path / "strict", progress=False)


def test_each_rank_samples_on_its_own_gpu(monkeypatch):
    import torch

    cfg = LabelConfig()
    info = RankInfo(3, 4, 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_settings(cfg, info).device is None  # CPU
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert rank_settings(cfg, info).device == "cuda:1" and chosen == [1]
    assert rank_settings(cfg.model_copy(update={"device": "cuda"}), info).device == (
        "cuda:1"
    )
    explicit = cfg.model_copy(update={"device": "cpu"})
    assert rank_settings(explicit, info).device == "cpu"
    # the launcher gave each rank its own CUDA_VISIBLE_DEVICES: one GPU, cuda:0
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert rank_settings(cfg, info).device == "cuda:0" and chosen[-1] == 0
