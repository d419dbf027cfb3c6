"""The pipeline end to end with a tiny random Llama and the real MiniLM embedder: the
slow half (models, end-to-end runs); the fast half is tests/test_pipeline.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from builders import CAPITAL_CONTEXT, question_rows

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.pipeline import label, read_rows


def _rows(n: int, words: int = 20) -> list[dict]:
    filler = " ".join(["filler"] * words)
    return question_rows(n, context=CAPITAL_CONTEXT + " " + filler)


def _cfg(model: Path, cache: Path, **kw) -> LabelConfig:
    base = dict(
        model=str(model), num_samples=4, max_new_tokens=12, cache_dir=str(cache)
    )
    base.update(kw)
    return LabelConfig(**base)


def test_end_to_end_rows_and_diagnostics(tiny_llama_dir, tmp_path):
    res = label(
        _cfg(tiny_llama_dir, tmp_path / "c"), _rows(3), tmp_path / "out", progress=False
    )
    out = tmp_path / "out"
    sft = read_rows(out / "sft.jsonl")
    pref = read_rows(out / "preference.jsonl")
    scored = read_rows(out / "scored.jsonl")
    assert res.counts["questions"] == 3 and res.counts["sampled"] == 3
    assert len(scored) == 3 and all(len(r["samples"]) == 4 for r in scored)
    assert len(pref) == res.counts["pairs"]
    assert (
        res.counts["pairs"]
        + sum(v for k, v in res.counts.items() if k.startswith("no_pair_"))
        == 3
    )
    for row in pref:
        user = row["chosen"][0]["content"]
        assert user.startswith("\nPassage 1:\nThe capital of Zorvan")
        assert user.endswith("solve the problem step-by-step.\n")
        assert row["rejected"][0] == row["chosen"][0]
        assert row["chosen"][1]["content"] != row["rejected"][1]["content"]
    for row, s in zip(sft, scored, strict=False):
        assert row["messages"][1]["content"] == s["samples"][s["chosen"]]
        # chosen is the argmax of the recorded scores
        assert s["scores"][s["chosen"]] == max(s["scores"])
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["subem"]["questions_with_answers"] == 3
    assert set(diag["subem"]) >= {"mbr_pick", "random_sample", "sample_mean", "oracle"}


def test_cache_hit_miss_and_determinism(tiny_llama_dir, tmp_path):
    cache = tmp_path / "c"
    first = label(_cfg(tiny_llama_dir, cache), _rows(3), tmp_path / "a", progress=False)
    again = label(_cfg(tiny_llama_dir, cache), _rows(3), tmp_path / "b", progress=False)
    assert again.counts["cache_hits"] == 3 and again.counts["sampled"] == 0
    assert again.cache_dir == first.cache_dir
    assert (tmp_path / "a" / "scored.jsonl").read_text() == (
        tmp_path / "b" / "scored.jsonl"
    ).read_text()
    # a changed setting is a new key: nothing stale is reused
    hotter = label(
        _cfg(tiny_llama_dir, cache, temperature=1.3),
        _rows(3),
        tmp_path / "d",
        progress=False,
    )
    assert hotter.cache_dir != first.cache_dir
    assert hotter.counts["sampled"] == 3 and hotter.counts["cache_hits"] == 0
    # so is changed data
    other = label(_cfg(tiny_llama_dir, cache), _rows(4), tmp_path / "e", progress=False)
    assert other.cache_dir != first.cache_dir and other.counts["sampled"] == 4


_KILLED_RUN = textwrap.dedent(
    """
    import json, sys
    from axolotl_sealong.core.config import LabelConfig
    from axolotl_sealong.core.pipeline import label
    cfg = LabelConfig(**json.loads(sys.argv[1]))
    rows = json.loads(open(sys.argv[2]).read())
    label(cfg, rows, sys.argv[3], progress=False)
    """
)


def test_resume_after_sigkill_loses_only_questions_in_flight(tiny_llama_dir, tmp_path):
    rows = _rows(6)
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    settings = dict(
        model=str(tiny_llama_dir),
        num_samples=3,
        max_new_tokens=400,
        cache_dir=str(tmp_path / "c"),
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _KILLED_RUN,
            json.dumps(settings),
            str(tmp_path / "rows.json"),
            str(tmp_path / "killed"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    samples = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "c").glob("*/samples.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            samples = found[0]
            break
        time.sleep(0.05)
    assert samples is not None, "the subprocess never wrote 2 questions"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len([ln for ln in samples.read_text().splitlines() if ln.strip()])
    assert 2 <= finished < 6, "kill came too late to test a resume"

    cfg = LabelConfig(**settings)
    resumed = label(cfg, rows, tmp_path / "resumed", progress=False)
    assert resumed.counts["cache_hits"] >= 2
    assert resumed.counts["cache_hits"] + resumed.counts["sampled"] == 6
    # an uninterrupted run from scratch gives the same samples (per-question seeds)
    fresh = label(
        cfg.model_copy(update={"cache_dir": str(tmp_path / "c2")}),
        rows,
        tmp_path / "fresh",
        progress=False,
    )
    assert fresh.counts["sampled"] == 6
    a = [r["samples"] for r in read_rows(tmp_path / "resumed" / "scored.jsonl")]
    b = [r["samples"] for r in read_rows(tmp_path / "fresh" / "scored.jsonl")]
    assert a == b


def test_overlong_prompts_are_skipped_or_middle_truncated(tiny_llama_dir, tmp_path):
    rows = _rows(2) + [
        {
            "context": "HEAD " + "word " * 600 + " TAIL",
            "question": "Where?",
            "answers": ["x"],
        }
    ]
    cfg = _cfg(tiny_llama_dir, tmp_path / "c", max_model_len=400)
    res = label(cfg, rows, tmp_path / "skip", progress=False)
    assert res.counts["skipped_overlong"] == 1
    assert len(read_rows(tmp_path / "skip" / "scored.jsonl")) == 2

    cfg = _cfg(
        tiny_llama_dir, tmp_path / "c", max_model_len=400, overlong="truncate_middle"
    )
    res = label(cfg, rows, tmp_path / "trunc", progress=False)
    assert res.counts["skipped_overlong"] == 0 and res.counts["truncated_middle"] == 1
    sft = read_rows(tmp_path / "trunc" / "sft.jsonl")
    user = [
        r["messages"][0]["content"]
        for r in sft
        if "HEAD" in r["messages"][0]["content"]
    ]
    assert user and "TAIL" in user[0] and user[0].count("word") < 600


def test_fully_cached_rerun_never_loads_the_sampling_model(
    tiny_llama_dir, tmp_path, monkeypatch
):
    import axolotl_sealong.core.pipeline as pipeline

    cfg = _cfg(tiny_llama_dir, tmp_path / "c")
    label(cfg, _rows(2), tmp_path / "a", progress=False)

    def no_model(cfg, *args):
        raise AssertionError("the sampling model was loaded for a cached run")

    monkeypatch.setattr(pipeline, "_open_sampler", no_model)
    again = label(cfg, _rows(2), tmp_path / "b", progress=False)
    assert again.counts["cache_hits"] == 2
    with pytest.raises(AssertionError, match="sampling model was loaded"):
        label(cfg, _rows(3), tmp_path / "c3", progress=False)  # one new question
