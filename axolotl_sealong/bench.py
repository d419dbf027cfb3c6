"""Benchmarks whose figures go into README (rerun them to check)."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np

from axolotl_sealong.embedded import EMBEDDED_EMBEDDER

_WORDS = (
    "the plan first find passage which states that city was founded by river "
    "capital author born year company owner answer therefore so we know of in "
    "second step third check compare both facts mentioned above president war "
    "team won league built bridge married daughter son located north county"
).split()


def synthetic_outputs(
    questions: int, samples: int, words: int, seed: int = 0
) -> list[list[str]]:
    """Reasoning-like texts: samples of one question share most of their words."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(questions):
        base = rng.choice(_WORDS, size=words)
        group = []
        for _ in range(samples):
            text = base.copy()
            flips = rng.random(words) < 0.3
            text[flips] = rng.choice(_WORDS, size=int(flips.sum()))
            group.append(" ".join(text) + f". The answer is {rng.choice(_WORDS)}.")
        out.append(group)
    return out


def bench_mbr(
    questions: int = 200,
    samples: int = 16,
    words: int = 290,
    embedder_name: str = EMBEDDED_EMBEDDER,
    long_text: str = "chunk_mean",
) -> dict[str, Any]:
    """Seconds to embed Q x N texts (one batched call) vs to score and select."""
    from axolotl_sealong.embedder import Embedder
    from axolotl_sealong.mbr import mbr_scores, select_pair

    texts = synthetic_outputs(questions, samples, words)
    flat = [t for group in texts for t in group]
    t0 = time.perf_counter()
    embedder = Embedder(embedder_name, long_text=long_text)
    load_s = time.perf_counter() - t0
    tokens = embedder.model.tokenizer(
        flat[:64], add_special_tokens=False, verbose=False
    )["input_ids"]
    chunks, _, _ = embedder.windows(flat)
    t1 = time.perf_counter()
    emb = embedder.encode(flat)
    embed_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    rng = np.random.default_rng(0)
    for q in range(questions):
        block = emb[q * samples : (q + 1) * samples]
        select_pair(mbr_scores(block), texts[q], "lower_half", 0.0, rng)
    score_s = time.perf_counter() - t2
    return {
        "questions": questions,
        "samples": samples,
        "texts": len(flat),
        "windows": len(chunks),
        "mean_tokens_per_text": round(float(np.mean([len(t) for t in tokens])), 1),
        "embedder": embedder_name,
        "long_text": long_text,
        "load_s": round(load_s, 3),
        "embed_s": round(embed_s, 3),
        "score_s": round(score_s, 4),
        "score_over_embed": round(score_s / embed_s, 5),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}",
    }
