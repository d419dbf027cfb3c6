"""Long contexts in the paper's format, packed to a token budget.

SEALONG writes every document as ``f"Passage {i}:\\n{text}".strip() + "\\n"``,
numbered from 1 after shuffling, concatenates the blocks and strips the result
(``create_dataset_musique`` in the reference ``process_data.py``). Both builders
here share that format and one packing rule: the supporting passages always go
in, distractors are added greedily while they fit, and the final string, counted
with the target model's tokenizer, never exceeds the target. A row whose
supporting passages alone exceed the target is skipped (``SkipRow``), not
truncated: truncating would cut away the evidence the answer rests on.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# A row ends up within this many tokens below its target (never above it),
# unless the distractor supply runs out; see ``tolerance_tokens``.
TOLERANCE_FRACTION = 0.02
TOLERANCE_MIN_TOKENS = 32

DEFAULT_TOKENIZER = "embedded:smollm2-135m-instruct"


def stable_hash(*parts: object) -> int:
    """A 64-bit hash that is the same in every process (unlike ``hash``)."""
    data = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def tolerance_tokens(target: int) -> int:
    """How far below ``target`` a packed context may end: 2% or 32 tokens."""
    return max(TOLERANCE_MIN_TOKENS, math.ceil(target * TOLERANCE_FRACTION))


class SkipRow(Exception):
    """A row that cannot be built; ``reason`` is the count key in the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def format_block(index: int, text: str) -> str:
    return f"Passage {index}:\n{text}".strip() + "\n"


def format_context(texts: Sequence[str]) -> str:
    """The paper's context string: numbered blocks, concatenated, stripped."""
    return "".join(format_block(i, t) for i, t in enumerate(texts, start=1)).strip()


class TokenCounter:
    """Counts tokens of the target model's tokenizer, without special tokens.

    Uses the Rust ``tokenizers`` backend directly when the tokenizer has one:
    it batches across cores and skips transformers' per-call overhead and its
    "sequence longer than model_max_length" warning (we only count here).
    """

    def __init__(self, tokenizer: Any, name: str = "") -> None:
        self.tokenizer = tokenizer
        self.name = name or str(getattr(tokenizer, "name_or_path", ""))
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # A private copy without the truncation/padding a tokenizer.json may
            # carry: transformers resets those per call, the raw backend not.
            backend = type(backend).from_str(backend.to_str())
            backend.no_truncation()
            backend.no_padding()
        self._backend = backend
        self._headers: list[int] = [0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._backend is not None:
            encs = self._backend.encode_batch(list(texts), add_special_tokens=False)
            return [len(e.ids) for e in encs]
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def header(self, index: int) -> int:
        """Tokens added by block ``index``: its ``Passage i:`` line plus newline."""
        while len(self._headers) <= index:
            start = len(self._headers)
            stop = max(start * 2, 64)
            heads = [f"Passage {i}:\n" for i in range(start, stop)]
            # +1: the newline that ends every block but the last one.
            self._headers.extend(c + 1 for c in self.count_many(heads))
        return self._headers[index]

    def describe(self) -> str:
        cls = type(self.tokenizer).__name__
        size = getattr(self.tokenizer, "vocab_size", None)
        return f"{self.name} ({cls}, vocab {size})"


def load_tokenizer(name_or_path: str = DEFAULT_TOKENIZER) -> TokenCounter:
    """A ``TokenCounter`` for a local folder, an HF id or ``embedded:*`` name."""
    from transformers import AutoTokenizer

    from axolotl_sealong.common.models import check_model_source

    path = check_model_source(
        name_or_path,
        "--tokenizer",
        needs=("tokenizer_config.json", "tokenizer.json"),
        what="the target model's folder",
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    return TokenCounter(tokenizer, name=name_or_path)


@dataclass(frozen=True)
class Passage:
    """One document body (no ``Passage i:`` header) and its token count."""

    text: str
    tokens: int
    key: str
    group: str = ""  # e.g. a normalised title: one group never appears twice


def make_passages(
    counter: TokenCounter,
    texts: Sequence[str],
    keys: Sequence[str],
    groups: Sequence[str] | None = None,
) -> list[Passage]:
    """Tokenize bodies once (batched) and wrap them as ``Passage`` objects."""
    clean = [t.strip() for t in texts]
    counts = counter.count_many(clean)
    groups = groups if groups is not None else [""] * len(clean)
    return [
        Passage(t, c, k, g)
        for t, c, k, g in zip(clean, counts, keys, groups, strict=True)
    ]


class DistractorSource(Protocol):
    def take(self, room: int) -> Passage | None:
        """A passage of at most ``room`` tokens, or None when none is left."""
        ...


class OrderedSource:
    """Tries each passage once, in the given order, as the paper does."""

    def __init__(self, passages: Iterable[Passage]) -> None:
        self._items = list(passages)
        self._next = 0

    def take(self, room: int) -> Passage | None:
        while self._next < len(self._items):
            item = self._items[self._next]
            self._next += 1
            if item.tokens <= room:
                return item
        return None


class SortedPool:
    """Passages sorted by length, shared read-only by many ``PoolSource`` s."""

    def __init__(self, passages: Iterable[Passage]) -> None:
        self.items = sorted(passages, key=lambda p: (p.tokens, p.key))
        self.lengths = [p.tokens for p in self.items]

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class PoolSource:
    """Random passages from a shared pool, uniform among those that still fit.

    Early on every passage fits, so the draw is uniform over the pool; near the
    budget only short ones fit, which is what lets a context end close to its
    target without scanning the pool.
    """

    pool: SortedPool
    rng: random.Random
    allowed: Callable[[Passage], bool] = lambda p: True
    used: set[int] = field(default_factory=set)

    def take(self, room: int) -> Passage | None:
        limit = bisect.bisect_right(self.pool.lengths, room)
        if limit == 0:
            return None
        for _ in range(32):
            idx = self.rng.randrange(limit)
            if idx not in self.used and self.allowed(self.pool.items[idx]):
                self.used.add(idx)
                return self.pool.items[idx]
        start = self.rng.randrange(limit)
        for off in range(limit):
            idx = (start + off) % limit
            if idx not in self.used:
                self.used.add(idx)  # seen: never offered again either way
                if self.allowed(self.pool.items[idx]):
                    return self.pool.items[idx]
        return None


@dataclass
class Packed:
    context: str
    num_tokens: int
    target_tokens: int
    num_passages: int
    supporting_positions: list[int]  # 1-based passage numbers
    short: bool  # the distractor supply ran out before the tolerance was met


def _estimate(chosen: Sequence[Passage], counter: TokenCounter) -> int:
    """Bodies plus the exact cost of each ``Passage i:`` header, minus the
    newline that the final ``strip`` removes."""
    heads = sum(counter.header(i) for i in range(1, len(chosen) + 1))
    return sum(p.tokens for p in chosen) + heads - 1


def _fill(
    chosen: list[Passage],
    sources: Sequence[DistractorSource],
    budget: int,
    counter: TokenCounter,
) -> bool:
    """Add distractors while the estimate stays within ``budget``.

    Returns True when the sources had nothing more that fits (exhausted),
    False when it stopped because the budget was used up.
    """
    estimate = _estimate(chosen, counter)
    for source in sources:
        while True:
            cost = counter.header(len(chosen) + 1)
            room = budget - estimate - cost
            if room <= 0:
                return False
            item = source.take(room)
            if item is None:
                break
            chosen.append(item)
            estimate += item.tokens + cost
    return True


def _render(
    chosen: Sequence[Passage], counter: TokenCounter, rng: random.Random
) -> tuple[list[int], str, int]:
    order = rng.sample(range(len(chosen)), len(chosen))
    context = format_context([chosen[i].text for i in order])
    return order, context, counter.count(context)


def pack_context(
    supporting: Sequence[Passage],
    sources: Sequence[DistractorSource],
    target: int,
    counter: TokenCounter,
    rng: random.Random,
    max_rounds: int = 8,
) -> Packed:
    """Supporting passages plus greedy distractors, shuffled, within ``target``.

    The running estimate adds body tokens and the exact cost of each
    ``Passage i:`` header; the final string is then counted exactly. Where
    tokens merge across block boundaries the estimate is off by a few tokens,
    so we correct from the exact count: drop the last distractor when over,
    top up when more than the tolerance under.
    """
    if not supporting:
        raise SkipRow("no supporting passages")
    chosen: list[Passage] = list(supporting)
    n_support = len(chosen)
    if _estimate(chosen, counter) > target:
        raise SkipRow("target shorter than supporting passages")
    slack = tolerance_tokens(target)
    bias = 0  # exact minus estimate, learned from the last exact count
    rounds = 0
    while True:
        exhausted = rounds >= max_rounds or _fill(
            chosen, sources, target - bias, counter
        )
        rounds += 1
        order, context, exact = _render(chosen, counter, rng)
        bias = exact - _estimate(chosen, counter)
        if exact > target:
            if len(chosen) == n_support:
                raise SkipRow("target shorter than supporting passages")
            chosen.pop()
            continue
        if exhausted or target - exact <= slack:
            break
    positions = sorted(pos for pos, i in enumerate(order, 1) if i < n_support)
    return Packed(
        context=context,
        num_tokens=exact,
        target_tokens=target,
        num_passages=len(chosen),
        supporting_positions=positions,
        short=target - exact > slack,
    )
