"""The OpenAI-compatible engine: N samples per request from one or more servers.

Any server that speaks ``/v1/chat/completions`` (or ``/v1/completions``) with
``n`` works: ``vllm serve``, SGLang, TGI. One request asks for all N samples of
one question, so the server can share the prompt's KV cache across them.
Several base URLs share the questions: each server has ``concurrency`` workers
that take the next question from one queue, so a faster server takes more
and a server that dies hands its questions to the others. This is how
sampling scales past one machine, and how a training environment whose pins
clash with vLLM's (axolotl 0.19) still gets vLLM's speed.

Faults: connection errors, timeouts (a hung server), 429 and 5xx are retried
with exponential backoff; a server that still fails is dropped; when none is
left the run stops with an error naming each server and its last error.
Questions already yielded are in the pipeline's cache, so a rerun continues.
A 4xx other than 429 (bad request) is not retried.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from axolotl_sealong.common.models import resolve_model
from axolotl_sealong.sampling.base import (
    SampleRequest,
    SamplingParams,
    chat_token_ids,
    split_urls,
)
from axolotl_sealong.sampling.options import (
    CLIENT_SETTINGS,
    client_options,
    read_settings,
)
from axolotl_sealong.sampling.registry import register_engine

LOG = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0


class ServerError(RuntimeError):
    """A server still failed after every retry."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url


class BadRequest(RuntimeError):
    """The server rejected the request itself; retrying will not help."""


class _Stopped(Exception):
    pass


class OpenAISampler:
    """HTTP client for OpenAI-compatible servers (``httpx``, thread pool)."""

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_urls: str | list[str] | None = None,
        revision: str | None = None,
        max_model_len: int | None = None,
        served_model: str | None = None,
        api: str = "chat",
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 900.0,
        retries: int = 5,
        backoff: float = 2.0,
        connect_timeout: float = 10.0,
        server_check: Callable[[], str | None] | None = None,
    ) -> None:
        """``server_check``: for a server we started, why it is gone (it exited)
        or None; a gone server fails at once instead of after every retry."""
        import httpx
        from transformers import AutoTokenizer

        if not base_urls:
            raise ValueError("the openai engine needs base URL(s), e.g. .../v1")
        urls = split_urls(base_urls) if isinstance(base_urls, str) else base_urls
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be chat or completions, got {api!r}")
        if concurrency < 1 or retries < 0 or timeout <= 0 or backoff <= 0:
            raise ValueError(
                "need concurrency >= 1, retries >= 0, timeout > 0, backoff > 0"
            )
        self.urls = [u.rstrip("/") for u in urls]
        self._stops: list[threading.Event] = []
        self.api = api
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.server_check = server_check
        path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
            limits=httpx.Limits(max_connections=concurrency * len(self.urls) + 4),
            headers=headers,
        )
        cards = {url: self._models(url) for url in self.urls}
        self.served_model = served_model or self._pick_model(cards)
        lengths = []
        for url, models in cards.items():
            card = next((m for m in models if m.get("id") == self.served_model), None)
            if card is None:
                names = ", ".join(str(m.get("id")) for m in models) or "none"
                raise ValueError(
                    f"{url} does not serve {self.served_model!r} (it serves: "
                    f"{names}): set openai_model"
                )
            if card.get("max_model_len"):
                lengths.append(int(card["max_model_len"]))
        self.max_model_len = int(
            max_model_len or (min(lengths) if lengths else self._local_limit(path))
        )
        if lengths and self.max_model_len > min(lengths):
            raise ValueError(
                f"max_model_len {self.max_model_len} exceeds what the server(s) "
                f"accept ({min(lengths)})"
            )
        LOG.info(
            "openai sampler: %d server(s) %s, model %s, api %s, %d request(s) in "
            "flight per server, max_model_len %d",
            len(self.urls),
            ", ".join(self.urls),
            self.served_model,
            api,
            concurrency,
            self.max_model_len,
        )

    # -- setup ------------------------------------------------------------------

    def _models(self, url: str) -> list[dict[str, Any]]:
        try:
            body = self._call(url, "GET", "/models", None, threading.Event())
        except (ServerError, BadRequest) as err:
            raise ConnectionError(
                f"cannot list models at {url}/models ({err}): is the server up, "
                "and does the URL end in /v1?"
            ) from None
        return list(body.get("data") or [])

    def _pick_model(self, cards: dict[str, list[dict[str, Any]]]) -> str:
        first_url, models = next(iter(cards.items()))
        return pick_served_model(first_url, models)

    @staticmethod
    def _local_limit(path: str) -> int:
        from transformers import AutoConfig

        try:
            limit = AutoConfig.from_pretrained(path).max_position_embeddings
        except Exception:  # a tokenizer-only folder
            limit = None
        return int(limit or 4096)

    # -- HTTP with retries ------------------------------------------------------

    def _call(
        self,
        url: str,
        method: str,
        route: str,
        payload: dict[str, Any] | None,
        stop: threading.Event,
    ) -> dict[str, Any]:
        """One request with retries; raises ServerError when they run out."""
        import httpx

        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self._before_retry(url, route, last, attempt, stop)
            if stop.is_set():
                raise _Stopped
            try:
                resp = self.client.request(method, url + route, json=payload)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g} s"
                continue
            except httpx.HTTPError as err:
                last = f"{type(err).__name__}: {err}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"HTTP {resp.status_code} {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                raise BadRequest(f"{url}{route}: HTTP {resp.status_code} {resp.text}")
            try:
                return dict(resp.json())
            except ValueError:
                last = f"not JSON: {resp.text[:200]!r}"
        raise ServerError(url, f"{last} (after {self.retries + 1} attempt(s))")

    def _before_retry(
        self, url: str, route: str, last: str, attempt: int, stop: threading.Event
    ) -> None:
        """Back off before retry ``attempt``; a server we know is gone fails now."""
        gone = self.server_check() if self.server_check else None
        if gone:
            raise ServerError(url, f"{last}; the server {gone}")
        delay = min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)
        delay *= random.uniform(0.5, 1.0)
        LOG.warning(
            "%s%s: %s; retry %d/%d in %.1f s",
            url,
            route,
            last,
            attempt,
            self.retries,
            delay,
        )
        if stop.wait(delay):
            raise _Stopped

    def _payload(self, req: SampleRequest, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.served_model,
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": req.seed,
        }
        if params.ignore_eos:
            body["ignore_eos"] = True  # a vLLM / SGLang extension (benchmarks)
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": req.user_message}]
        else:
            body["prompt"] = chat_token_ids(self.tokenizer, req.user_message)
        return body

    def _texts(self, url: str, body: dict[str, Any], n: int) -> list[str]:
        choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise BadRequest(
                f"{url} returned {len(choices)} choices for n={n}: does this server "
                "support n > 1?"
            )
        if self.api == "chat":
            texts = [(c.get("message") or {}).get("content") or "" for c in choices]
        else:
            texts = [c.get("text") or "" for c in choices]
        return [str(t).strip() for t in texts]

    # -- sampling ---------------------------------------------------------------

    def sample(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        todo = list(requests)
        for req in todo:
            length = len(chat_token_ids(self.tokenizer, req.user_message))
            if length + params.max_new_tokens > self.max_model_len:
                raise ValueError(
                    f"question {req.key}: {length} prompt tokens + "
                    f"{params.max_new_tokens} new tokens exceed max_model_len "
                    f"{self.max_model_len} (what the server accepts): set "
                    f"max_model_len: {self.max_model_len} so such prompts are "
                    "skipped or truncated before sampling"
                )
        if not todo:
            return
        run = _Run(self, params, todo)
        run.start()
        remaining = len(todo)
        finished = 0
        try:
            while remaining:
                kind, first, second = run.results.get()
                if kind == "ok":
                    remaining -= 1
                    finished += 1
                    yield first, second
                    continue
                if kind == "down":
                    LOG.error("dropping server %s", second)
                    if len(run.dead) < len(self.urls):
                        continue  # the other servers take its questions
                    failures = "; ".join(run.dead.values())
                    error: Exception = RuntimeError(
                        f"every sampling server failed ({failures}); the "
                        f"{finished} question(s) finished in this run are in the "
                        "cache: restart the server(s) and rerun to continue"
                    )
                else:
                    error = RuntimeError(
                        f"question {first.key} failed: {second}; finished questions "
                        "are in the cache"
                    )
                run.stop.set()
                yield from self._drain(run.results)
                raise error
        finally:
            run.stop.set()

    @staticmethod
    def _drain(
        results: queue.Queue[tuple[str, Any, Any]],
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        """Whatever already finished, so it reaches the cache before the error."""
        while True:
            try:
                kind, req, texts = results.get_nowait()
            except queue.Empty:
                return
            if kind == "ok":
                yield req, texts

    def close(self) -> None:
        """Stop any workers still running and close the connections."""
        for stop in self._stops:
            stop.set()
        self.client.close()


class _Run:
    """One ``sample()`` call: a shared queue, ``concurrency`` workers per server."""

    def __init__(
        self, engine: OpenAISampler, params: SamplingParams, todo: list[SampleRequest]
    ) -> None:
        self.engine = engine
        self.params = params
        self.route = "/chat/completions" if engine.api == "chat" else "/completions"
        self.work: queue.Queue[SampleRequest] = queue.Queue()
        for req in todo:
            self.work.put(req)
        self.results: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self.dead: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        engine._stops.append(self.stop)

    def start(self) -> None:
        for url in self.engine.urls:
            for _ in range(self.engine.concurrency):
                threading.Thread(target=self.worker, args=(url,), daemon=True).start()

    def worker(self, url: str) -> None:
        engine = self.engine
        while not self.stop.is_set():
            with self.lock:
                if url in self.dead:
                    return
            try:
                req = self.work.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                payload = engine._payload(req, self.params)
                body = engine._call(url, "POST", self.route, payload, self.stop)
                texts = engine._texts(url, body, self.params.n)
            except _Stopped:
                return
            except ServerError as err:
                with self.lock:
                    self.dead[url] = str(err)
                self.work.put(req)  # another server takes it
                self.results.put(("down", url, err))
                return
            except Exception as err:  # a bad request: retrying cannot help
                self.results.put(("fail", req, err))
                return
            self.results.put(("ok", req, texts))


def pick_served_model(url: str, models: list[dict[str, Any]]) -> str:
    """The model to sample when ``openai_model`` is unset: the only one served."""
    names = [str(m.get("id")) for m in models]
    if len(names) != 1:
        raise ValueError(
            f"{url} serves {len(names)} models ({', '.join(names) or 'none'}"
            "): set openai_model to the one to sample"
        )
    return names[0]


def served_model_name(
    base_urls: str, api_key: str | None = None, timeout: float = 10.0
) -> str:
    """What ``openai_model`` defaults to, asked of the first server (one GET).

    The sample cache key needs the served name before anything is sampled: the
    weights are on the server, and its name for them is all the key can see.
    """
    import httpx

    url = split_urls(base_urls)[0]
    key = api_key or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.get(url + "/models", headers=headers, timeout=min(timeout, 30.0))
        resp.raise_for_status()
        models = list(resp.json().get("data") or [])
    except (httpx.HTTPError, ValueError) as err:
        raise ConnectionError(
            f"cannot list models at {url}/models ({err}): is the server up, and "
            "does the URL end in /v1? (with openai_model set, a run whose samples "
            "are all cached needs no server)"
        ) from None
    return pick_served_model(url, models)


# OpenAISampler argument -> the LabelConfig setting it is read from
OPENAI_SETTINGS = {
    "base_urls": "openai_base_urls",
    "served_model": "openai_model",
    "api": "openai_api",
    "api_key": "openai_api_key",
}


def _options(settings: Any, out_dir: Path | None) -> dict[str, Any]:
    return {
        **client_options(settings),
        **read_settings(settings, OPENAI_SETTINGS),
    }


@register_engine(
    "openai",
    settings=(*CLIENT_SETTINGS.values(), *OPENAI_SETTINGS.values()),
    options=_options,
)
def open_openai(
    model: str,
    *,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    **kwargs: Any,
) -> OpenAISampler:
    """The factory's way in. The server holds the weights: ``model`` names the
    tokenizer, ``dtype`` and ``device`` are the server's business, and an
    adapter must be served there (refused here)."""
    if adapter:
        raise ValueError(
            "the openai engine samples whatever the server serves: serve the "
            "adapter there (vllm serve --enable-lora --lora-modules name=PATH) and "
            "set openai_model to its name, instead of setting adapter"
        )
    return OpenAISampler(model, **kwargs)
