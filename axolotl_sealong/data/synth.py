"""Synthetic multi-hop questions over fictional entities, at a target length.

Why synthetic: the CPU default and CPU evaluation need long-context multi-hop
data that exists offline, has gold answers, and that no model has memorised.
Each row is a small fictional world:

- a chain ``e0 -r1-> e1 -r2-> ... -rk-> ek`` (2-4 hops by default); the
  question composes the relations ("Who is the founder of the employer of the
  spouse of Rolan Vesk?") and ``ek`` is the answer;
- one supporting passage per hop, about ``e{i}``, stating ``r{i+1}`` plus a few
  unrelated facts and filler sentences;
- ``distractors`` decoy chains that mirror the supporting passages: the same
  relations, entities with near-miss names (same first name, same company
  word, same first letters), so reading the wrong passage gives a well-formed
  wrong answer;
- generic distractor passages about other fictional entities, with the same
  relation types, added until the target length is reached.

Every fact has a distinct subject, so each (subject, relation) is stated once
in a context and the answer is unique. No entity name in a context contains the
normalised answer, so SubEM cannot match the answer by accident.

Train and eval use disjoint name words: each generated word belongs to the
split given by a stable hash of its spelling (``split_of_word``), and a split
only ever uses its own words.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from dataclasses import dataclass
from typing import Any

from axolotl_sealong.core.metrics import normalize_answer
from axolotl_sealong.data.card import BuildReport, check_lengths, finish_report
from axolotl_sealong.data.contexts import (
    OrderedSource,
    Passage,
    PoolSource,
    SkipRow,
    SortedPool,
    TokenCounter,
    make_passages,
    pack_context,
    stable_hash,
)

LOG = logging.getLogger(__name__)

SPLITS = ("train", "eval")
PERSON, CITY, COMPANY, COUNTRY = "person", "city", "company", "country"
ENTITY_TYPES = (PERSON, CITY, COMPANY, COUNTRY)


@dataclass(frozen=True)
class Relation:
    name: str
    subject: str
    object: str
    templates: tuple[str, ...]  # sentences with {s} (subject) and {o} (object)
    phrase: str  # noun phrase with {x}, composed into questions


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "spouse",
        PERSON,
        PERSON,
        ("{s} is married to {o}.", "{s}'s spouse is {o}."),
        "the spouse of {x}",
    ),
    Relation(
        "employer",
        PERSON,
        COMPANY,
        ("{s} works for {o}.", "{s} is employed by {o}."),
        "the employer of {x}",
    ),
    Relation(
        "birthplace",
        PERSON,
        CITY,
        ("{s} was born in {o}.", "{s} was born in the city of {o}."),
        "the birthplace of {x}",
    ),
    Relation(
        "founder",
        COMPANY,
        PERSON,
        ("{s} was founded by {o}.", "{o} founded {s}."),
        "the founder of {x}",
    ),
    Relation(
        "ceo",
        COMPANY,
        PERSON,
        ("The chief executive of {s} is {o}.", "{o} is the chief executive of {s}."),
        "the chief executive of {x}",
    ),
    Relation(
        "headquarters",
        COMPANY,
        CITY,
        ("{s} is headquartered in {o}.", "The headquarters of {s} are in {o}."),
        "the headquarters city of {x}",
    ),
    Relation(
        "country",
        CITY,
        COUNTRY,
        ("{s} is a city in {o}.", "{s} lies in {o}."),
        "the country of {x}",
    ),
    Relation(
        "mayor",
        CITY,
        PERSON,
        ("The mayor of {s} is {o}.", "{o} is the mayor of {s}."),
        "the mayor of {x}",
    ),
    Relation(
        "capital",
        COUNTRY,
        CITY,
        ("The capital of {s} is {o}.", "{o} is the capital of {s}."),
        "the capital of {x}",
    ),
    Relation(
        "leader",
        COUNTRY,
        PERSON,
        ("The president of {s} is {o}.", "{o} is the president of {s}."),
        "the president of {x}",
    ),
)
RELATION_BY_NAME = {r.name: r for r in RELATIONS}

# Consecutive hops that would loop back or contradict world sense
# (the spouse of a spouse; the country of a capital is the country itself;
# a chief executive working for another company).
FORBIDDEN_STEPS = {("spouse", "spouse"), ("capital", "country"), ("ceo", "employer")}

# Unrelated facts: make passages look like prose, never touch a relation.
FILLERS: dict[str, tuple[str, ...]] = {
    PERSON: (
        "{s} enjoys {hobby}.",
        "{s} studied {field} at university.",
        "{s} speaks {n1} languages.",
        "{s} once spent {n1} years travelling abroad.",
    ),
    CITY: (
        "{s} has a population of about {n3} people.",
        "{s} is known for its {sight}.",
        "{s} sits at an elevation of {n2} metres.",
    ),
    COMPANY: (
        "{s} was established in {year}.",
        "{s} makes {product}.",
        "{s} employs about {n3} people.",
    ),
    COUNTRY: (
        "{s} is known for its {land}.",
        "{s} has a coastline of {n2} kilometres.",
        "{s} adopted its constitution in {year}.",
    ),
}
FILLER_WORDS: dict[str, tuple[str, ...]] = {
    "hobby": ("sailing", "chess", "pottery", "gardening", "archery", "cycling"),
    "field": ("law", "chemistry", "music", "history", "medicine", "geology"),
    "sight": ("old harbour", "stone bridges", "spring festival", "clock tower"),
    "product": ("glassware", "bicycles", "radio parts", "textiles", "paper"),
    "land": ("mountain ranges", "vineyards", "long winters", "salt flats"),
}
COMPANY_KINDS = ("Industries", "Labs", "Works", "Holdings", "Systems", "Foundry")
COUNTRY_SUFFIXES = ("ia", "land", "mark", "ora")
WH = {
    PERSON: "Who",
    CITY: "Which city",
    COMPANY: "Which company",
    COUNTRY: "Which country",
}

# Short pronounceable words: onset + vowel (+ coda), two or three syllables.
_ONSETS = (
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    "br", "dr", "kr", "st", "tr", "th",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "m", "k")
LEXICON_SIZE = 20_000  # words per split; a row uses a few hundred to a few thousand


def _template_vocabulary() -> frozenset[str]:
    texts: list[str] = [r.phrase for r in RELATIONS]
    texts += [t for r in RELATIONS for t in r.templates]
    texts += [t for ts in FILLERS.values() for t in ts]
    texts += [w for ws in FILLER_WORDS.values() for w in ws]
    texts += list(COMPANY_KINDS) + list(WH.values()) + ["is", "Passage"]
    return frozenset(w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t))


TEMPLATE_VOCABULARY = _template_vocabulary()
_VOCAB_BLOB = " ".join(sorted(TEMPLATE_VOCABULARY))


def split_of_word(word: str) -> str:
    """The split a generated name word belongs to (a stable 50/50 partition)."""
    return SPLITS[stable_hash("sealong-synth-split", word.lower()) % 2]


def name_words(text: str) -> set[str]:
    """Generated name words in ``text``: capitalised words outside the templates.

    Used by tests (and users) to check that two files share no entity names.
    """
    words = re.findall(r"\b[A-Z][a-z]+\b", text)
    return {w for w in words if w.lower() not in TEMPLATE_VOCABULARY}


@functools.lru_cache(maxsize=1)
def _lexicons() -> dict[str, tuple[str, ...]]:
    """Both splits' name words, drawn once from one fixed stream and
    partitioned by ``split_of_word``: the same on every machine and run."""
    rng = random.Random("sealong-synth-lexicon-v1")
    found: dict[str, dict[str, None]] = {s: {} for s in SPLITS}
    while min(len(v) for v in found.values()) < LEXICON_SIZE:
        n = rng.choice((2, 2, 2, 3))
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
            for _ in range(n)
        ).capitalize()
        if 4 <= len(word) <= 9 and word.lower() not in _VOCAB_BLOB:
            found[split_of_word(word)][word] = None
    return {s: tuple(list(v)[:LEXICON_SIZE]) for s, v in found.items()}


@functools.lru_cache(maxsize=12)
def _by_prefix(split: str, countries: bool, n: int) -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for word in _countries(split) if countries else _lexicons()[split]:
        index.setdefault(word[:n], []).append(word)
    return {k: tuple(v) for k, v in index.items()}


@functools.lru_cache(maxsize=2)
def _countries(split: str) -> tuple[str, ...]:
    """Country names: a word of the split plus a suffix ("Trubouland")."""
    names = (
        (w + suffix).capitalize()
        for w in _lexicons()[split][: LEXICON_SIZE // 4]
        for suffix in COUNTRY_SUFFIXES
        if not (w[-1] in "aeiou" and suffix[0] in "aeiou")  # no "Gakaiia"
    )
    return tuple(n for n in names if len(n) <= 11 and split_of_word(n) == split)


@functools.lru_cache(maxsize=2)
def _country_set(split: str) -> frozenset[str]:
    return frozenset(_countries(split))


def lexicon(split: str) -> tuple[str, ...]:
    """The name words a split may use (for tests and diagnostics)."""
    return _lexicons()[split] + _countries(split)


def _word(
    rng: random.Random, split: str, like: str = "", countries: bool = False
) -> str:
    """A name word of ``split``; with ``like``, a near miss: one sharing its
    longest possible prefix (3, 2 or 1 letters)."""
    if like:
        for n in (3, 2, 1):
            kin = _by_prefix(split, countries, n).get(like[:n], ())
            if any(k != like for k in kin[:2]):
                while (word := rng.choice(kin)) == like:
                    pass
                return word
    return rng.choice(_countries(split) if countries else _lexicons()[split])


class _World:
    """Names of one row's world: unique, in one split, never containing the
    answer (so SubEM cannot match the answer inside another entity's name)."""

    def __init__(self, rng: random.Random, split: str) -> None:
        self.rng = rng
        self.split = split
        self.names: dict[str, str] = {}  # normalised name -> type
        self.answer = ""

    def _fresh(self, etype: str, like: str | None) -> str:
        rng, split = self.rng, self.split
        if etype == PERSON:
            if like:
                first, last = like.split(" ", 1)
                if rng.random() < 0.5:
                    return f"{first} {_word(rng, split)}"
                return f"{_word(rng, split)} {last}"
            return f"{_word(rng, split)} {_word(rng, split)}"
        if etype == COMPANY:
            if like:
                word, kind = like.split(" ", 1)
                others = [k for k in COMPANY_KINDS if k != kind]
                return f"{word} {rng.choice(others)}"
            return f"{_word(rng, split)} {rng.choice(COMPANY_KINDS)}"
        if etype == COUNTRY and like and rng.random() < 0.5:
            # Same stem, another suffix ("Vebousland" -> "Vebousmark"), if any.
            stem = next(
                (like[: -len(x)] for x in COUNTRY_SUFFIXES if like.endswith(x)), ""
            )
            kin = [stem + x for x in COUNTRY_SUFFIXES if stem + x != like]
            kin = [k for k in kin if k in _country_set(split)]
            if kin:
                return rng.choice(kin)
        return _word(rng, split, like or "", countries=etype == COUNTRY)

    def _ok(self, name: str, is_answer: bool) -> bool:
        norm = normalize_answer(name)
        if not norm or norm in self.names:
            return False
        if is_answer:
            return not any(norm in other for other in self.names)
        return not (self.answer and self.answer in norm)

    def new(self, etype: str, like: str | None = None, is_answer: bool = False) -> str:
        for attempt in range(200):
            name = self._fresh(etype, like if attempt < 50 else None)
            if self._ok(name, is_answer):
                norm = normalize_answer(name)
                self.names[norm] = etype
                if is_answer:
                    self.answer = norm
                return name
        raise SkipRow("could not draw a fresh entity name")


def _fill_slots(template: str, rng: random.Random, subject: str) -> str:
    return template.format(
        s=subject,
        n1=rng.randint(2, 6),
        n2=rng.randint(40, 900),
        n3=rng.randint(2, 900) * 100,
        year=rng.randint(1850, 2015),
        **{k: rng.choice(v) for k, v in FILLER_WORDS.items()},
    )


def _passage(
    world: _World,
    subject: str,
    etype: str,
    facts: list[tuple[Relation, str]],
    extra_facts: int,
    fillers: int,
) -> str:
    """Sentences about ``subject``: the given facts, ``extra_facts`` more facts
    about fresh entities (never the spouse relation: it is symmetric and could
    give a chain entity a second spouse), and filler sentences."""
    rng = world.rng
    used = {rel.name for rel, _ in facts}
    spare = [
        r
        for r in RELATIONS
        if r.subject == etype and r.name not in used and r.name != "spouse"
    ]
    all_facts = list(facts)
    for rel in rng.sample(spare, min(extra_facts, len(spare))):
        all_facts.append((rel, world.new(rel.object)))
    sentences = [rng.choice(r.templates).format(s=subject, o=o) for r, o in all_facts]
    for template in rng.sample(FILLERS[etype], min(fillers, len(FILLERS[etype]))):
        sentences.append(_fill_slots(template, rng, subject))
    rng.shuffle(sentences)
    return " ".join(sentences)


def sample_relations(rng: random.Random, hops: int) -> list[Relation]:
    """A random relation path of ``hops`` steps that type-checks."""
    rel = rng.choice(RELATIONS)
    path = [rel]
    while len(path) < hops:
        last = path[-1]
        options = [
            r
            for r in RELATIONS
            if r.subject == last.object and (last.name, r.name) not in FORBIDDEN_STEPS
        ]
        path.append(rng.choice(options))
    return path


def compose_question(start: str, path: list[Relation]) -> str:
    phrase = start
    for rel in path:
        phrase = rel.phrase.format(x=phrase)
    return f"{WH[path[-1].object]} is {phrase}?"


def parse_hops(spec: str | int) -> tuple[int, int]:
    """``"2-4"`` -> (2, 4); ``"3"`` or 3 -> (3, 3)."""
    text = str(spec).strip()
    match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", text)
    if not match:
        raise ValueError(f"--hops {spec!r}: use a number or a range like 2-4")
    lo = int(match.group(1))
    hi = int(match.group(2) or lo)
    if not 1 <= lo <= hi <= 8:
        raise ValueError(f"--hops {spec!r}: need 1 <= low <= high <= 8")
    return lo, hi


@dataclass
class SynthItem:
    question: str
    answer: str
    chain: list[str]
    relations: list[Relation]
    supporting: list[str]
    decoys: list[str]


def make_item(
    rng: random.Random, split: str, hops: int, decoy_chains: int
) -> tuple[SynthItem, _World]:
    """One question with its supporting and decoy passages (no padding yet)."""
    world = _World(rng, split)
    path = sample_relations(rng, hops)
    chain = [world.new(path[0].subject)]
    for i, rel in enumerate(path):
        chain.append(world.new(rel.object, is_answer=i == len(path) - 1))
    supporting = [
        _passage(
            world,
            chain[i],
            rel.subject,
            [(rel, chain[i + 1])],
            rng.randint(0, 2),
            rng.randint(0, 2),
        )
        for i, rel in enumerate(path)
    ]
    decoys: list[str] = []
    for _ in range(decoy_chains):
        mirror = [world.new(path[0].subject, like=chain[0])]
        for i, rel in enumerate(path):
            mirror.append(world.new(rel.object, like=chain[i + 1]))
        decoys += [
            _passage(
                world,
                mirror[i],
                rel.subject,
                [(rel, mirror[i + 1])],
                rng.randint(0, 2),
                rng.randint(0, 2),
            )
            for i, rel in enumerate(path)
        ]
    item = SynthItem(
        question=compose_question(chain[0], path),
        answer=chain[-1],
        chain=chain,
        relations=path,
        supporting=supporting,
        decoys=decoys,
    )
    return item, world


def _generic_passage(world: _World, chain: list[str], short: bool = False) -> str:
    """A distractor about a new entity; sometimes its name echoes a chain name.

    ``short`` passages state one fact and nothing else: the small pieces that
    let a context end within a few tokens of its target.
    """
    rng = world.rng
    etype = rng.choice(ENTITY_TYPES)
    like = None
    if rng.random() < 0.25:
        kin = [c for c in chain[:-1] if world.names.get(normalize_answer(c)) == etype]
        like = rng.choice(kin) if kin else None
    subject = world.new(etype, like=like)
    own = [r for r in RELATIONS if r.subject == etype]
    n_facts = 1 if short else rng.randint(1, len(own))
    facts = [(r, world.new(r.object)) for r in rng.sample(own, n_facts)]
    fillers = 0 if short else rng.choice((0, 0, 1, 2))
    return _passage(world, subject, etype, facts, 0, fillers)


class GenericSource:
    """Generic distractors made on demand for one row (the supply never ends).

    A first batch covers the target; when nothing left fits the remaining
    room, short one-fact passages are made until one fits or even the shortest
    cannot.
    """

    def __init__(
        self,
        world: _World,
        chain: list[str],
        counter: TokenCounter,
        tokens: int,
        row_id: str,
    ) -> None:
        self.world, self.chain, self.counter, self.row_id = (
            world,
            chain,
            counter,
            row_id,
        )
        self.made = 0
        self.smallest = 1  # tokens of the shortest passage made so far
        self.sources = [self._batch(tokens, short=False)]

    def _batch(self, tokens: int, short: bool) -> PoolSource:
        passages: list[Passage] = []
        total = 0
        while total < tokens:
            n = max(8, (tokens - total) // 40)
            texts = [_generic_passage(self.world, self.chain, short) for _ in range(n)]
            keys = [f"{self.row_id}/g{self.made + i}" for i in range(n)]
            self.made += n
            made = make_passages(self.counter, texts, keys)
            passages += made
            total += sum(p.tokens for p in made)
        if short:
            self.smallest = min(p.tokens for p in passages)
        return PoolSource(SortedPool(passages), self.world.rng)

    def take(self, room: int) -> Passage | None:
        for _ in range(3):
            for source in self.sources:
                if (item := source.take(room)) is not None:
                    return item
            if room < self.smallest:
                return None
            self.sources.append(self._batch(min(room * 4, 4000), short=True))
        return None


def build_synth(
    *,
    num: int,
    seed: int,
    split: str,
    counter: TokenCounter,
    min_tokens: int,
    max_tokens: int,
    hops: str | int = "2-4",
    distractors: int = 2,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], BuildReport]:
    """``num`` rows for ``split``; deterministic for (seed, split, settings)."""
    from tqdm.auto import tqdm

    check_lengths(num, min_tokens, max_tokens)
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if distractors < 0:
        raise ValueError(f"--distractors must be >= 0, got {distractors}")
    lo, hi = parse_hops(hops)
    report = BuildReport(
        kind="synth",
        requested=num,
        settings={
            "split": split,
            "seed": seed,
            "tokenizer": counter.describe(),
            "target range": f"{min_tokens}-{max_tokens} tokens",
            "hops": f"{lo}-{hi}" if lo != hi else str(lo),
            "decoy chains per question": distractors,
        },
    )
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=num, desc=f"synth {split}", unit="row", disable=not progress)
    index = 0
    max_attempts = num * 4 + 50
    while len(rows) < num and index < max_attempts:
        row_id = f"synth-{split}-{seed}-{index}"
        index += 1
        # Two streams: the question (and its decoys) depends only on the seed,
        # split, index, hops and decoys, so files built with one seed at other
        # lengths ask the same questions; the length and padding use the other.
        rng_item = random.Random(f"sealong-synth:{split}:{seed}:{row_id}:item")
        rng = random.Random(f"sealong-synth:{split}:{seed}:{row_id}:context")
        target = rng.randint(min_tokens, max_tokens)
        n_hops = rng_item.randint(lo, hi)
        try:
            item, world = make_item(rng_item, split, n_hops, distractors)
            world.rng = rng
            support = make_passages(
                counter, item.supporting, [f"s{i}" for i in range(n_hops)]
            )
            decoys = make_passages(
                counter, item.decoys, [f"d{i}" for i in range(len(item.decoys))]
            )
            generic = GenericSource(world, item.chain, counter, target, row_id)
            packed = pack_context(
                support,
                [OrderedSource(rng.sample(decoys, len(decoys))), generic],
                target,
                counter,
                rng,
            )
        except SkipRow as skip:
            report.skip(skip.reason)
            continue
        report.short += packed.short
        rows.append(
            {
                "id": row_id,
                "context": packed.context,
                "question": item.question,
                "answers": [item.answer],
                "num_tokens": packed.num_tokens,
                "target_tokens": packed.target_tokens,
                "num_passages": packed.num_passages,
                "supporting_passages": packed.supporting_positions,
                "hops": n_hops,
                "relations": [r.name for r in item.relations],
                "chain": item.chain,
                "split": split,
                "source": "synth",
            }
        )
        bar.update(1)
    bar.close()
    report.considered = index
    finish_report(report, rows, f"synthetic rows for split {split!r}")
    return rows, report
