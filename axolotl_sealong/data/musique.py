"""MuSiQue-Ans questions in long contexts of a target token length.

This follows SEALONG's ``process_data.py`` (shared/notes section 1): every
supporting document goes in, then the question's own non-supporting documents
in random order while they fit, then everything is shuffled into ``Passage i:``
blocks. Deviations, all documented in ``data/README.md``: the default documents
are MuSiQue's own paragraphs (with their title as first line) instead of full
Wikipedia articles, distractors continue with paragraphs of other questions
until the target is reached, targets are any integer in the range (not
multiples of 1024), rows whose supporting documents exceed the target are
skipped, and everything is seeded.

Input is streamed: one pass keeps the ``--num`` (plus a reserve) selected
questions and a bounded, seeded sample of paragraphs for distractors. With
``wiki`` a second streamed pass over the dump keeps only the articles those
questions name, plus a bounded random sample for topping up.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import random
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from axolotl_sealong.common.rows import iter_records
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

REQUIRED_FIELDS = ("id", "question", "paragraphs", "answer")
DEFAULT_POOL_PARAGRAPHS = 20_000
DEFAULT_POOL_ARTICLES = 1_000
DEFAULT_WIKI_CONFIG = {"wikimedia/wikipedia": "20231101.en"}
_HOPS = re.compile(r"^(\d)hop")


def normalize_title(title: str) -> str:
    """The paper's title key: lower-case, no periods, en/em dash to '-'."""
    title = title.lower().replace(".", "").replace("–", "-").replace("—", "-")
    return re.sub(r"\s+", " ", title).strip()


@dataclass(frozen=True)
class Paragraph:
    title: str
    text: str

    @property
    def group(self) -> str:
        return normalize_title(self.title)

    def key(self) -> str:
        data = f"{self.title}\n{self.text}".encode()
        return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: list[str]
    supporting: list[Paragraph]
    others: list[Paragraph]
    hops: int | None


def parse_question(raw: Any) -> Question | str:
    """A usable MuSiQue row, or the reason it is not (a report count key)."""
    if not isinstance(raw, Mapping):
        return "not a JSON object"
    for name in REQUIRED_FIELDS:
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"missing field '{name}'"
    if raw.get("answerable") is False:
        return "unanswerable (answerable: false)"
    paragraphs = raw["paragraphs"]
    if not isinstance(paragraphs, list) or not paragraphs:
        return "malformed paragraphs"
    support_idx = _supporting_indices(raw)
    supporting: list[Paragraph] = []
    others: list[Paragraph] = []
    for pos, para in enumerate(paragraphs):
        if not isinstance(para, Mapping):
            return "malformed paragraphs"
        title, text = para.get("title"), para.get("paragraph_text")
        if not isinstance(title, str) or not isinstance(text, str):
            return "malformed paragraphs"
        item = Paragraph(title.strip(), text.strip())
        idx = para.get("idx", pos)
        (supporting if idx in support_idx else others).append(item)
    if not supporting:
        return "no supporting paragraphs"
    aliases = raw.get("answer_aliases") or []
    answers = [str(raw["answer"]).strip()]
    answers += [str(a).strip() for a in aliases if str(a).strip() not in answers]
    match = _HOPS.match(str(raw["id"]))
    return Question(
        id=str(raw["id"]),
        question=str(raw["question"]).strip(),
        answers=[a for a in answers if a],
        supporting=supporting,
        others=[p for p in others if p not in supporting],
        hops=int(match.group(1)) if match else None,
    )


def _supporting_indices(raw: Mapping[str, Any]) -> set[Any]:
    """``is_supporting`` flags; the decomposition's indices when flags are absent."""
    paragraphs = raw["paragraphs"]
    flagged = {
        p.get("idx", i)
        for i, p in enumerate(paragraphs)
        if isinstance(p, Mapping) and p.get("is_supporting") is True
    }
    has_flags = any(isinstance(p, Mapping) and "is_supporting" in p for p in paragraphs)
    if flagged or has_flags:
        return flagged
    steps = raw.get("question_decomposition") or []
    return {
        s.get("paragraph_support_idx")
        for s in steps
        if isinstance(s, Mapping) and s.get("paragraph_support_idx") is not None
    }


class _BottomK:
    """The k items with the smallest seeded hashes: a uniform sample that does
    not depend on the order of the stream, kept in O(k) memory."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[tuple[int, str, Any]] = []
        self._keys: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def accepts(self, h: int, key: str) -> bool:
        """Whether ``offer`` would keep this item (build values only then)."""
        if self.k <= 0 or key in self._keys:
            return False
        if len(self._heap) < self.k:
            return True
        top_h, top_key = -self._heap[0][0], self._heap[0][1]
        return h < top_h or (h == top_h and key > top_key)

    def offer(self, h: int, key: str, value: Any) -> None:
        if not self.accepts(h, key):
            return
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (-h, key, value))
        else:
            _, old, _ = heapq.heapreplace(self._heap, (-h, key, value))
            self._keys.discard(old)
        self._keys.add(key)

    def sorted_values(self) -> list[Any]:
        return [v for _, _, v in sorted(self._heap, key=lambda e: (-e[0], e[1]))]


def _scan_questions(
    records: Iterable[Any],
    seed: int,
    keep: int,
    pool_size: int,
    report: BuildReport,
) -> tuple[list[Question], list[Paragraph]]:
    """One pass: seeded selection of questions and of distractor paragraphs."""
    questions = _BottomK(keep)
    pool = _BottomK(pool_size)
    for raw in records:
        report.considered += 1
        parsed = parse_question(raw)
        if isinstance(parsed, str):
            report.skip(parsed)
            continue
        if parsed.id in questions:
            report.skip("duplicate id")
            continue
        questions.offer(stable_hash("q", seed, parsed.id), parsed.id, parsed)
        for para in parsed.supporting + parsed.others:
            key = para.key()
            pool.offer(stable_hash("p", seed, key), key, para)
    return questions.sorted_values(), pool.sorted_values()


def _scan_wiki(
    source: str,
    split: str,
    config: str | None,
    wanted: set[str],
    seed: int,
    pool_size: int,
    progress: bool = False,
) -> tuple[dict[str, bytes], list[Paragraph]]:
    """Articles whose normalised titles are wanted (compressed), plus a seeded
    random sample of the others for topping up."""
    found: dict[str, bytes] = {}  # zlib: articles are long, kept ~3x smaller
    pool = _BottomK(pool_size)
    seen = 0
    records = iter_records(source, split=split, config=config)
    for rec in _progress(records, "reading wiki", progress):
        seen += 1
        title, text = rec.get("title"), rec.get("text")
        if not isinstance(title, str) or not isinstance(text, str) or not text.strip():
            continue
        key = normalize_title(title)
        if key in wanted:
            if key not in found:
                found[key] = zlib.compress(text.strip().encode("utf-8"), 1)
        elif pool.accepts(h := stable_hash("w", seed, key), key):
            pool.offer(h, key, Paragraph(title, text.strip()))
        if pool_size == 0 and len(found) == len(wanted):
            break
    LOG.info(
        "wiki: read %d articles, found %d of %d titles", seen, len(found), len(wanted)
    )
    return found, pool.sorted_values()


def _progress(items: Iterable[Any], desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=" items", mininterval=2.0)


def _body(para: Paragraph, titles: bool) -> str:
    return f"{para.title}\n{para.text}" if titles and para.title else para.text


def _pool(
    counter: TokenCounter, paragraphs: list[Paragraph], titles: bool
) -> SortedPool:
    texts = [_body(p, titles) for p in paragraphs]
    keys = [p.key() for p in paragraphs]
    groups = [p.group for p in paragraphs]
    return SortedPool(make_passages(counter, texts, keys, groups))


def build_musique(
    source: str,
    *,
    num: int,
    seed: int,
    counter: TokenCounter,
    min_tokens: int,
    max_tokens: int,
    split: str = "train",
    config: str | None = None,
    wiki: str | None = None,
    wiki_split: str = "train",
    wiki_config: str | None = None,
    titles: bool | None = None,
    pool_size: int | None = None,
    reserve: int | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], BuildReport]:
    """Build ``num`` rows; returns them with a report of what was skipped and why.

    ``titles`` (default: on for MuSiQue paragraphs, off for wiki articles as in
    the paper) puts the document title on the first line of its passage.
    Raises ``ValueError`` when no row could be built, naming the skip reasons.
    """
    check_lengths(num, min_tokens, max_tokens)
    use_titles = (wiki is None) if titles is None else titles
    if pool_size is None:
        pool_size = DEFAULT_POOL_ARTICLES if wiki else DEFAULT_POOL_PARAGRAPHS
    if wiki and wiki_config is None:
        wiki_config = DEFAULT_WIKI_CONFIG.get(wiki)
    keep = num + (reserve if reserve is not None else max(16, num // 2))
    report = BuildReport(
        kind="musique",
        requested=num,
        settings={
            "source": source if config is None else f"{source} ({config})",
            "split": split,
            "seed": seed,
            "tokenizer": counter.describe(),
            "target range": f"{min_tokens}-{max_tokens} tokens",
            "documents": f"Wikipedia articles from {wiki}"
            if wiki
            else ("MuSiQue paragraphs"),
            "titles as first line": use_titles,
            "distractor pool": f"{pool_size} {'articles' if wiki else 'paragraphs'}",
        },
    )
    records = _progress(
        iter_records(source, split=split, config=config), "reading questions", progress
    )
    questions, pool_paras = _scan_questions(
        records, seed, keep, 0 if wiki else pool_size, report
    )
    LOG.info(
        "musique: read %d items, %d usable candidates kept; skipped: %s",
        report.considered,
        len(questions),
        report.skip_summary(),
    )
    articles: dict[str, bytes] | None = None
    if wiki:
        wanted = {p.group for q in questions for p in q.supporting + q.others}
        articles, pool_paras = _scan_wiki(
            wiki, wiki_split, wiki_config, wanted, seed, pool_size, progress
        )
    pool = _pool(counter, pool_paras, use_titles)
    rows = _build_rows(
        questions,
        pool,
        articles,
        counter,
        num,
        seed,
        min_tokens,
        max_tokens,
        use_titles,
        report,
        progress,
    )
    finish_report(report, rows, f"MuSiQue rows in {source}")
    return rows, report


def _documents(
    question: Question, articles: dict[str, bytes] | None
) -> tuple[list[Paragraph], list[Paragraph]]:
    """Supporting and own distractor documents: paragraphs, or full articles."""
    if articles is None:
        return question.supporting, question.others
    support_titles = list(dict.fromkeys(p.group for p in question.supporting))
    if any(t not in articles for t in support_titles):
        raise SkipRow("supporting article not in the wiki dump")
    by_group = {p.group: p.title for p in question.supporting + question.others}

    def article(title: str) -> str:
        return zlib.decompress(articles[title]).decode("utf-8")

    support = [Paragraph(by_group[t], article(t)) for t in support_titles]
    other_titles = dict.fromkeys(p.group for p in question.others)
    others = [
        Paragraph(by_group[t], article(t))
        for t in other_titles
        if t in articles and t not in support_titles
    ]
    return support, others


def _build_rows(
    questions: list[Question],
    pool: SortedPool,
    articles: dict[str, bytes] | None,
    counter: TokenCounter,
    num: int,
    seed: int,
    min_tokens: int,
    max_tokens: int,
    titles: bool,
    report: BuildReport,
    progress: bool,
) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=num, desc="musique", unit="row", disable=not progress)
    for question in questions:
        if len(rows) >= num:
            break
        rng = random.Random(f"sealong-musique:{seed}:{question.id}")
        target = rng.randint(min_tokens, max_tokens)
        try:
            support, others = _documents(question, articles)
        except SkipRow as skip:
            report.skip(skip.reason)
            continue
        passages = make_passages(
            counter,
            [_body(p, titles) for p in support + others],
            [p.key() for p in support + others],
            [p.group for p in support + others],
        )
        supporting, own = passages[: len(support)], passages[len(support) :]
        own = rng.sample(own, len(own))
        own_groups = {p.group for p in question.supporting + question.others}

        def allowed(p: Passage, groups: set[str] = own_groups) -> bool:
            return p.group not in groups

        pool_source = PoolSource(pool, rng, allowed=allowed)
        try:
            packed = pack_context(
                supporting, [OrderedSource(own), pool_source], target, counter, rng
            )
        except SkipRow as skip:
            report.skip(skip.reason)
            continue
        report.short += packed.short
        rows.append(
            {
                "id": question.id,
                "context": packed.context,
                "question": question.question,
                "answers": question.answers,
                "num_tokens": packed.num_tokens,
                "target_tokens": packed.target_tokens,
                "num_passages": packed.num_passages,
                "supporting_passages": packed.supporting_positions,
                "hops": question.hops,
                "source": "musique",
            }
        )
        bar.update(1)
    bar.close()
    return rows
