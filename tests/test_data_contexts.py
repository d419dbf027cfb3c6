"""Context format, packing to a token budget, readers/writers and the card."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from axolotl_sealong.common.rows import iter_records, read_rows, write_rows
from axolotl_sealong.data.card import BuildReport, card_path, histogram, write_dataset
from axolotl_sealong.data.contexts import (
    OrderedSource,
    PoolSource,
    SkipRow,
    SortedPool,
    TokenCounter,
    format_context,
    load_tokenizer,
    make_passages,
    pack_context,
    tolerance_tokens,
)

WORDS = "alpha beta gamma delta river stone cloud north market garden".split()


@pytest.fixture(scope="module")
def counter(tiny_tokenizer_dir: Path) -> TokenCounter:
    return load_tokenizer(str(tiny_tokenizer_dir))


def _texts(n: int, seed: int = 0, lo: int = 3, hi: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + "."
        for _ in range(n)
    ]


def test_format_is_the_reference_loop() -> None:
    docs = ["  first doc\n", "second doc", "third"]
    # create_dataset_musique in SEALONG's process_data.py, verbatim logic
    context = ""
    for idx, text in enumerate(docs):
        context += f"Passage {idx + 1}:\n{text}".strip() + "\n"
    assert format_context(docs) == context.strip()
    assert format_context(docs).startswith("Passage 1:\n  first doc\nPassage 2:")


def test_counter_matches_the_tokenizer_without_special_tokens(
    counter: TokenCounter,
) -> None:
    texts = _texts(5) + ["Passage 12:\nx", ""]
    expected = [
        len(counter.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts
    ]
    assert counter.count_many(texts) == expected


def test_counter_ignores_truncation_saved_in_the_tokenizer(
    tiny_tokenizer_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.backend_tokenizer.enable_truncation(max_length=8)
    long_text = " ".join(WORDS * 20)
    assert TokenCounter(tokenizer).count(long_text) > 100


@pytest.mark.parametrize("target", [300, 1000, 4000])
def test_pack_hits_target_within_tolerance(counter: TokenCounter, target: int) -> None:
    support = make_passages(counter, _texts(2, seed=1), ["s0", "s1"])
    pool = SortedPool(
        make_passages(counter, _texts(400, seed=2), [str(i) for i in range(400)])
    )
    rng = random.Random(target)
    packed = pack_context(support, [PoolSource(pool, rng)], target, counter, rng)
    assert packed.num_tokens == counter.count(packed.context)
    assert target - tolerance_tokens(target) <= packed.num_tokens <= target
    assert not packed.short
    # Supporting passages are present, at the positions reported.
    blocks = packed.context.split("Passage ")[1:]
    assert len(blocks) == packed.num_passages
    assert len(packed.supporting_positions) == len(support)
    at_positions = [blocks[pos - 1] for pos in packed.supporting_positions]
    for passage in support:
        assert any(passage.text in block for block in at_positions)


def test_pack_orders_sources_and_reports_short_supply(counter: TokenCounter) -> None:
    support = make_passages(counter, ["the answer is stone."], ["s"])
    own = make_passages(counter, _texts(3, seed=5), ["o0", "o1", "o2"])
    rng = random.Random(0)
    packed = pack_context(support, [OrderedSource(own)], 5000, counter, rng)
    # Everything fits, the supply runs out far below the target: kept, flagged.
    assert packed.num_passages == 4
    assert packed.short
    for passage in own:
        assert passage.text in packed.context


def test_pack_skips_when_supporting_passages_exceed_target(
    counter: TokenCounter,
) -> None:
    support = make_passages(counter, _texts(3, seed=3, lo=50, hi=60), ["a", "b", "c"])
    total = sum(p.tokens for p in support)
    with pytest.raises(SkipRow, match="target shorter than supporting passages"):
        pack_context(support, [], total // 2, counter, random.Random(0))


def test_pool_source_never_repeats_and_respects_filter(counter: TokenCounter) -> None:
    passages = make_passages(
        counter, _texts(50, seed=4), [str(i) for i in range(50)], ["g1", "g2"] * 25
    )
    source = PoolSource(
        SortedPool(passages), random.Random(1), lambda p: p.group == "g1"
    )
    taken = []
    while (item := source.take(10_000)) is not None:
        taken.append(item.key)
    assert len(taken) == len(set(taken)) == 25


def test_readers_stream_jsonl_gz_array_and_parquet(tmp_path: Path) -> None:
    rows = [{"id": str(i), "x": [i, i + 1]} for i in range(5)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=1))
    write_rows(rows, tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.jsonl.gz", "a.json", "a.parquet"):
        assert list(iter_records(str(tmp_path / name))) == rows, name
    with pytest.raises(FileNotFoundError):
        list(iter_records(str(tmp_path / "missing.jsonl")))
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        list(iter_records(str(tmp_path / "bad.jsonl")))


def test_write_dataset_writes_rows_and_card(tmp_path: Path) -> None:
    rows = [
        {
            "id": str(i),
            "context": "c",
            "question": "q",
            "answers": ["a"],
            "num_tokens": n,
        }
        for i, n in enumerate([100, 150, 180, 420, 990])
    ]
    report = BuildReport(kind="synth", settings={"seed": 7}, requested=6)
    report.skip("target shorter than supporting passages")
    for suffix in (".jsonl", ".parquet"):
        out, card = write_dataset(rows, tmp_path / f"d{suffix}", report, "sealong x")
        assert read_rows(out) == rows
        assert card == card_path(out) == tmp_path / "d.card.md"
        text = card.read_text()
        assert (
            "`seed`: `7`" in text
            and "target shorter than supporting passages: 1" in text
        )
        assert "rows written: 5 (requested 6)" in text and "sealong x" in text
    with pytest.raises(ValueError, match="jsonl or .parquet"):
        write_rows(rows, tmp_path / "d.csv")


def test_histogram_counts_every_value() -> None:
    values = [1, 2, 3, 50, 51, 100]
    lines = histogram(values, bins=4).splitlines()
    assert sum(int(line.split()[1]) for line in lines) == len(values)
    assert histogram([]) == "(no rows)"
