"""`axolotl preprocess` / `axolotl train` for real, in a subprocess, on CPU: the slow
half (models, end-to-end runs); the fast half is tests/test_plugin_e2e.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from builders import e2e_recipe, subprocess_env
from test_plugin_e2e import AXOLOTL, pytestmark  # noqa: F401 - the same skip


def _axolotl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AXOLOTL, *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _labeled(root: Path) -> list[dict]:
    return [json.loads(d.read_text()) for d in root.glob("*/diagnostics.json")]


@pytest.mark.parametrize("mode", ["orpo", "sft"])
def test_preprocess_then_train_leaves_an_adapter(tiny_llama_dir, tmp_path, mode):
    recipe = e2e_recipe(tmp_path, tiny_llama_dir, mode)
    pre = _axolotl("preprocess", str(recipe), cwd=tmp_path)
    assert pre.returncode == 0, pre.stdout[-3000:] + pre.stderr[-3000:]
    (diag,) = _labeled(tmp_path / "prepared" / "sealong")
    assert diag["counts"]["sampled"] == 4
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()

    train = _axolotl("train", str(recipe), "--launcher", "python", cwd=tmp_path)
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-5000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert "sealong: reusing labeled rows" in log  # train sampled nothing
    assert "self-labeling" not in log
    samples = list((tmp_path / "samples").glob("*/samples.jsonl"))
    assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 4
    if mode == "sft":
        return
    # the paper's objective, from the plugin's trainer class
    assert "sealong: ResponseNLLORPOTrainer: ORPO NLL term over response" in log
    # rows written elsewhere (another prepared path, another machine sharing
    # the sample cache): labeling runs again but every sample comes from cache
    recipe = e2e_recipe(
        tmp_path, tiny_llama_dir, mode, sealong_output_dir=str(tmp_path / "rows2")
    )
    again = _axolotl("preprocess", str(recipe), cwd=tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    (diag,) = _labeled(tmp_path / "rows2")
    assert diag["counts"]["cache_hits"] == 4 and diag["counts"]["sampled"] == 0


def test_sealong_label_config_warms_axolotl_preprocess(tiny_llama_dir, tmp_path):
    """`sealong label --config` first, then `axolotl preprocess`: nothing resampled.

    Before the CLI read recipes with the plugin's functions, it left
    max_model_len unset (the plugin: min(sequence_len, model limit)), so the two
    keyed their samples differently and the plugin sampled everything again.
    """
    from axolotl_sealong.cli.main import main

    recipe = e2e_recipe(tmp_path, tiny_llama_dir, "orpo")
    out = tmp_path / "cli"
    assert (
        main(["label", "--config", str(recipe), "--out", str(out), "--no-progress"])
        == 0
    )
    cli = json.loads((out / "diagnostics.json").read_text())
    assert cli["counts"]["sampled"] == 4
    assert cli["settings"]["max_model_len"] == 1024  # sequence_len, as the plugin
    pre = _axolotl("preprocess", str(recipe), cwd=tmp_path)
    assert pre.returncode == 0, pre.stdout[-3000:] + pre.stderr[-3000:]
    (diag,) = _labeled(tmp_path / "prepared" / "sealong")
    assert diag["counts"]["cache_hits"] == 4 and diag["counts"]["sampled"] == 0
    assert diag["settings"] == cli["settings"]


def test_bf16_trains_on_a_cpu(tiny_llama_dir, tmp_path):
    """transformers refuses bf16 without a GPU unless use_cpu is set; the plugin sets
    it, so ``bf16: true`` (1.2-1.5x faster on CPUs with native bf16) just works."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU trains bf16 without use_cpu")
    recipe = e2e_recipe(tmp_path, tiny_llama_dir, "orpo", bf16=True)
    train = _axolotl("train", str(recipe), "--launcher", "python", cwd=tmp_path)
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-5000:]
    assert "bf16 on a CPU: passing use_cpu=True" in log
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("mode", ["orpo", "sft"])
def test_without_the_plugin_training_stops_with_a_clear_error(
    tiny_llama_dir, tmp_path, mode
):
    # a plugin that is not listed, or failed to import (axolotl only logs that):
    # the dataset type itself refuses to be trained on unlabeled
    recipe = e2e_recipe(
        tmp_path, tiny_llama_dir, mode, plugins=["axolotl_sealong_typo.SeaLongPlugin"]
    )
    run = _axolotl("preprocess", str(recipe), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "this dataset needs `plugins: [axolotl_sealong.SeaLongPlugin]`" in out
    assert not (tmp_path / "prepared" / "sealong").exists()


def test_concurrent_ranks_label_once(tiny_llama_dir, tmp_path):
    """Two processes (as two ranks would) enter the hook at once: one labels."""
    recipe = e2e_recipe(tmp_path, tiny_llama_dir, "orpo")
    procs = [
        subprocess.Popen(
            [AXOLOTL, "preprocess", str(recipe)],
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    labeled = [log for log in logs if "sealong: self-labeling" in log]
    reused = [log for log in logs if "sealong: reusing labeled rows" in log]
    assert len(labeled) == 1 and len(reused) == 1
    samples = list((tmp_path / "samples").glob("*/samples.jsonl"))
    assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 4


def _rank_env(rank: int | None, world: int = 2) -> dict[str, str]:
    env = subprocess_env(
        CUDA_VISIBLE_DEVICES="",  # CPU, so the ranks match the single run anywhere
        OMP_NUM_THREADS="1",  # three processes share the cores
    )
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    if rank is not None:
        env |= {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
    return env


def _preprocess(recipe: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    # output to a file: a rank blocked on a full pipe would stall the others
    with log.open("w") as fh:
        return subprocess.Popen(
            [AXOLOTL, "preprocess", str(recipe)],
            cwd=recipe.parent,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def _finish(
    procs: list[subprocess.Popen], logs: list[Path], timeout: float = 300
) -> list[str]:
    """Wait for every process; when one fails, stop the rest (they would wait)."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [log.read_text() for log in logs]
    for p, text in zip(procs, texts, strict=True):
        assert p.returncode == 0, text[-4000:]
    return texts


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _label_in_process(recipe: Path, out: Path, cache: Path) -> None:
    """The plugin's settings for ``recipe``, labeled by one process (this one)."""
    import torch

    from axolotl_sealong.core.config import LabelConfig
    from axolotl_sealong.core.pipeline import label, read_rows

    cfg = yaml.safe_load(recipe.read_text())
    # what plugin.label_settings makes of it (importing the plugin, i.e. axolotl,
    # would cost this test ~10 s): prompts sized to sequence_len
    label_cfg = LabelConfig.from_yaml_dict(cfg).model_copy(
        update={"cache_dir": str(cache), "max_model_len": cfg["sequence_len"]}
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks (OMP_NUM_THREADS=1): the same numerics
    try:
        label(label_cfg, read_rows(cfg["datasets"][0]["path"]), out, progress=False)
    finally:
        torch.set_num_threads(threads)


def test_hf_ranks_label_their_own_shards(tiny_llama_dir, tmp_path):
    """Two real ranks (RANK 0/1, WORLD_SIZE 2) each sample their half of the
    questions; the merged rows equal a one-process run's; one rank writes the
    training file; a rerun reuses the rows and waits for no rank."""
    settings = {"sealong_sampler": "hf", "sealong_utility": "rouge_l"}
    # 5 questions: shards of 3 and 2
    recipe = e2e_recipe(tmp_path, tiny_llama_dir, "orpo", questions=5, **settings)
    logs = [tmp_path / f"rank{r}.log" for r in range(2)]
    procs = [_preprocess(recipe, _rank_env(r), logs[r]) for r in range(2)]
    one = tmp_path / "one"
    try:
        _label_in_process(recipe, one, tmp_path / "one_samples")
    finally:
        texts = _finish(procs, logs)

    (out,) = (tmp_path / "prepared" / "sealong").glob("*/diagnostics.json")
    out = out.parent
    # merged rows: the single run's, line for line (order and scored index too)
    for name in ("sft.jsonl", "preference.jsonl", "scored.jsonl"):
        assert (out / name).read_text() == (one / name).read_text(), name
    keys = [row["key"] for row in _jsonl(one / "scored.jsonl")]
    assert len(keys) == 5
    merged = json.loads((out / "diagnostics.json").read_text())
    assert merged["counts"]["questions"] == 5 and merged["counts"]["sampled"] == 5

    # each rank sampled its shard keys[rank::2], and only that
    cached = [
        sorted(row["key"] for row in _jsonl(path))
        for path in (tmp_path / "samples").glob("*/samples.jsonl")
    ]
    assert sorted(cached) == sorted([sorted(keys[0::2]), sorted(keys[1::2])])
    for rank, log in enumerate(texts):
        mine = keys[rank::2]
        part = out / f"rank{rank}of2"
        assert [row["key"] for row in _jsonl(part / "scored.jsonl")] == mine
        counts = json.loads((part / "diagnostics.json").read_text())["counts"]
        assert counts["sampled"] == len(mine)
        assert f"rank {rank} of 2 self-labeling its shard, {len(mine)} of 5" in log
        assert f"{len(mine)} question(s) to label: 0 from cache" in log
        assert "sealong: self-labeling" not in log  # not the one-process path
        assert "sealong: merged labeled rows of 2 ranks" in log

    # exactly one rank fit the rows to sequence_len and wrote the training file
    assert sum(log.count("sealong: orpo rows for training") for log in texts) == 1
    assert len(_jsonl(next(out.glob("train_orpo_*.jsonl")))) == len(
        _jsonl(one / "preference.jsonl")
    )

    # a rerun reuses the merged rows: one rank alone returns, waiting for no shard
    log = tmp_path / "rerun.log"
    (rerun,) = _finish([_preprocess(recipe, _rank_env(1), log)], [log], 120)
    assert "sealong: reusing labeled rows" in rerun
    assert "self-labeling" not in rerun
