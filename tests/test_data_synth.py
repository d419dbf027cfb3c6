"""`sealong data synth`: lengths, answerability, determinism, split hygiene.

The answer is checked by an independent reader: it parses every sentence of
the context back into facts with the relation and filler templates, follows the
question's relations from its start entity, and must land on the gold answer.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from axolotl_sealong.cli import main as cli
from axolotl_sealong.common.rows import read_rows
from axolotl_sealong.core.metrics import normalize_answer, sub_em
from axolotl_sealong.data.card import card_path
from axolotl_sealong.data.contexts import (
    TokenCounter,
    format_context,
    load_tokenizer,
    tolerance_tokens,
)
from axolotl_sealong.data.synth import (
    FILLER_WORDS,
    FILLERS,
    RELATIONS,
    WH,
    build_synth,
    lexicon,
    make_item,
    name_words,
    parse_hops,
    split_of_word,
)

NAME = r"[A-Z][a-z]+(?: [A-Z][a-z]+)?"


def _pattern(template: str) -> re.Pattern[str]:
    out = re.escape(template)
    out = out.replace(r"\{s\}", f"(?P<s>{NAME})").replace(r"\{o\}", f"(?P<o>{NAME})")
    out = re.sub(r"\\\{[a-z0-9]+\\\}", r"[a-z0-9 ]+", out)
    return re.compile(f"^{out}$")


RELATION_PATTERNS = [(r.name, _pattern(t)) for r in RELATIONS for t in r.templates]
FILLER_PATTERNS = [_pattern(t) for ts in FILLERS.values() for t in ts]


def read_facts(context: str) -> tuple[dict[tuple[str, str], list[str]], set[str]]:
    """(subject, relation) -> objects, and every entity name, from the text."""
    facts: dict[tuple[str, str], list[str]] = {}
    names: set[str] = set()
    blocks = re.split(r"(?:^|\n)Passage \d+:\n", context)[1:]
    for block in blocks:
        for sentence in re.split(r"(?<=\.) ", block.strip()):
            for relation, pattern in RELATION_PATTERNS:
                if match := pattern.match(sentence):
                    facts.setdefault((match["s"], relation), []).append(match["o"])
                    names.update((match["s"], match["o"]))
                    break
            else:
                matches = [p.match(sentence) for p in FILLER_PATTERNS]
                match = next((m for m in matches if m), None)
                assert match, f"unparsed sentence: {sentence!r}"
                names.add(match["s"])
    return facts, names


def solve(question: str, facts: dict[tuple[str, str], list[str]]) -> str:
    """Follow the question's relations from its start entity through ``facts``."""
    wh = next(
        w for w in sorted(WH.values(), key=len, reverse=True) if question.startswith(w)
    )
    phrase = question[len(wh) + len(" is ") : -1]
    path = []
    while True:
        for rel in RELATIONS:
            prefix = rel.phrase.format(x="")
            if phrase.startswith(prefix):
                path.append(rel.name)
                phrase = phrase[len(prefix) :]
                break
        else:
            break
    entity = phrase
    for relation in reversed(path):
        objects = facts[(entity, relation)]
        assert len(objects) == 1, f"{entity} {relation}: {objects}"
        entity = objects[0]
    return entity


@pytest.fixture(scope="module")
def counter(tiny_tokenizer_dir: Path) -> TokenCounter:
    return load_tokenizer(str(tiny_tokenizer_dir))


def _check_rows(rows: list[dict[str, Any]], counter: TokenCounter, split: str) -> None:
    assert rows, "no rows were built: every check below would pass"
    for row in rows:
        assert isinstance(row["answers"], list) and len(row["answers"]) == 1
        ids = counter.tokenizer(row["context"], add_special_tokens=False)["input_ids"]
        assert row["num_tokens"] == len(ids)
        target = row["target_tokens"]
        assert target - tolerance_tokens(target) <= row["num_tokens"] <= target, row[
            "id"
        ]
        facts, names = read_facts(row["context"])
        answer = row["answers"][0]
        assert solve(row["question"], facts) == answer
        assert row["question"].startswith(WH[_answer_type(row)])
        # The chain is stated in the supporting passages, one hop per passage.
        blocks = row["context"].split("\nPassage ")
        supporting = [blocks[i - 1] for i in row["supporting_passages"]]
        assert len(supporting) == row["hops"] == len(row["chain"]) - 1
        bodies = [block.split(":\n", 1)[1] for block in supporting]
        only_support, _ = read_facts(format_context(bodies))
        assert solve(row["question"], only_support) == answer
        # SubEM cannot fire on another entity: no other name contains the answer.
        norm = normalize_answer(answer)
        assert [n for n in names if norm in normalize_answer(n)] == [answer]
        assert sub_em(f"The answer is {answer}.", row["answers"]) == 1.0
        # Every name word belongs to this row's split.
        assert {split_of_word(w) for w in name_words(row["context"])} == {split}


def _answer_type(row: dict[str, Any]) -> str:
    return next(r.object for r in RELATIONS if r.name == row["relations"][-1])


@pytest.mark.parametrize(("lo", "hi"), [(512, 1024), (2000, 4000)])
def test_rows_hit_target_and_are_answerable_from_supporting_passages(
    counter: TokenCounter, lo: int, hi: int
) -> None:
    rows, report = build_synth(
        num=15,
        seed=0,
        split="train",
        counter=counter,
        min_tokens=lo,
        max_tokens=hi,
        progress=False,
    )
    assert len(rows) == 15 and report.short == 0
    _check_rows(rows, counter, "train")
    assert {r["hops"] for r in rows} == {2, 3, 4}
    assert len({r["id"] for r in rows}) == 15


def test_embedded_smollm2_tokenizer_small_contexts() -> None:
    smol = load_tokenizer("embedded:smollm2-135m-instruct")
    rows, _ = build_synth(
        num=10,
        seed=1,
        split="eval",
        counter=smol,
        min_tokens=512,
        max_tokens=1024,
        progress=False,
    )
    assert len(rows) == 10
    _check_rows(rows, smol, "eval")


def test_splits_share_no_entity_names(counter: TokenCounter) -> None:
    kwargs: dict[str, Any] = dict(
        num=12, seed=0, counter=counter, min_tokens=800, max_tokens=1500
    )
    train, _ = build_synth(split="train", progress=False, **kwargs)
    evals, _ = build_synth(split="eval", progress=False, **kwargs)
    train_words = set().union(*(name_words(r["context"]) for r in train))
    eval_words = set().union(*(name_words(r["context"]) for r in evals))
    assert len(train_words) > 200 and len(eval_words) > 200
    assert not train_words & eval_words
    train_answers = {normalize_answer(r["answers"][0]) for r in train}
    assert not any(
        a in normalize_answer(r["context"]) for r in evals for a in train_answers
    )
    assert not set(lexicon("train")) & set(lexicon("eval"))
    assert {split_of_word(w) for w in lexicon("eval")} == {"eval"}


def _decoy_ends(seed: int, hops: int) -> tuple[Any, set[str], set[str]]:
    item, _ = make_item(random.Random(seed), "train", hops=hops, decoy_chains=2)
    text = "\n".join(f"Passage {i}:\n{t}" for i, t in enumerate(item.decoys, 1))
    facts, _ = read_facts(text)
    path = [r.name for r in item.relations]

    def follow(entity: str) -> str | None:
        for relation in path:
            objects = facts.get((entity, relation))
            if not objects:
                return None
            entity = objects[0]
        return entity

    starts = {s for (s, rel) in facts if rel == path[0] and follow(s)}
    ends = {end for s in starts if (end := follow(s))}
    return item, starts, ends


def _near(a: str, b: str, letters: int) -> bool:
    """Shares a word (people, companies) or its first letters (places)."""
    return bool(set(a.split()) & set(b.split())) or a[:letters] == b[:letters]


def test_decoys_mirror_the_chain_with_near_miss_names() -> None:
    pairs = []
    for seed in range(30):
        item, starts, ends = _decoy_ends(seed, hops=3)
        assert len(item.supporting) == 3 and len(item.decoys) == 6
        # Two decoy chains, each followable to a wrong answer.
        assert len(starts) == 2 and item.chain[0] not in starts
        assert len(ends) == 2 and item.answer not in ends
        pairs += [(s, item.chain[0]) for s in starts]
        pairs += [(e, item.answer) for e in ends]
    assert all(_near(a, b, 1) for a, b in pairs)
    assert sum(_near(a, b, 3) for a, b in pairs) >= 0.9 * len(pairs)


def test_hops_and_distractors_controls(counter: TokenCounter) -> None:
    rows, _ = build_synth(
        num=6,
        seed=2,
        split="eval",
        counter=counter,
        min_tokens=700,
        max_tokens=900,
        hops="3",
        distractors=0,
        progress=False,
    )
    assert {r["hops"] for r in rows} == {3}
    assert all(r["question"].count(" of ") == 3 for r in rows)
    assert parse_hops("2-4") == (2, 4) and parse_hops(3) == (3, 3)
    for bad in ("0", "4-2", "x", "1-9"):
        with pytest.raises(ValueError, match="--hops"):
            parse_hops(bad)


def test_target_shorter_than_supporting_passages_is_counted(
    counter: TokenCounter,
) -> None:
    rows, report = build_synth(
        num=20,
        seed=0,
        split="train",
        counter=counter,
        min_tokens=60,
        max_tokens=140,
        hops="2",
        progress=False,
    )
    assert report.skipped["target shorter than supporting passages"] > 0
    assert len(rows) + sum(report.skipped.values()) == report.considered
    with pytest.raises(ValueError, match="no usable synthetic rows.*target shorter"):
        build_synth(
            num=3,
            seed=0,
            split="train",
            counter=counter,
            min_tokens=5,
            max_tokens=10,
            progress=False,
        )


def test_cli_same_seed_same_file(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    def run(out: Path, seed: int, split: str = "train") -> bytes:
        argv = [
            "data", "synth", "--out", str(out), "--num", "5", "--seed", str(seed),
            "--split", split, "--tokenizer", str(tiny_tokenizer_dir),
            "--min-tokens", "512", "--max-tokens", "1024", "--hops", "2-4",
            "--distractors", "2", "--no-progress",
        ]  # fmt: skip
        assert cli.main(argv) == 0
        return out.read_bytes()

    first = run(tmp_path / "a.jsonl", 11)
    assert run(tmp_path / "b.jsonl", 11) == first
    assert run(tmp_path / "c.jsonl", 12) != first
    assert run(tmp_path / "d.jsonl", 11, split="eval") != first
    card = card_path(tmp_path / "a.jsonl").read_text()
    assert (
        "`seed`: `11`" in card and "`hops`: `2-4`" in card and "512-1024 tokens" in card
    )
    run(tmp_path / "a.parquet", 11)
    assert read_rows(tmp_path / "a.parquet") == read_rows(tmp_path / "a.jsonl")


def test_same_seed_asks_the_same_questions_at_other_lengths(
    counter: TokenCounter,
) -> None:
    kwargs: dict[str, Any] = dict(num=5, seed=3, split="eval", counter=counter)
    short, _ = build_synth(min_tokens=400, max_tokens=600, progress=False, **kwargs)
    long, _ = build_synth(min_tokens=2000, max_tokens=2500, progress=False, **kwargs)
    assert [r["question"] for r in short] == [r["question"] for r in long]
    assert [r["answers"] for r in short] == [r["answers"] for r in long]
    assert all(
        a["num_tokens"] < b["num_tokens"] for a, b in zip(short, long, strict=True)
    )


def test_filler_vocabulary_is_not_a_name(counter: TokenCounter) -> None:
    for words in FILLER_WORDS.values():
        for word in words:
            assert not name_words(word.capitalize())
