"""The choice of engine: a name (or a ``LabelConfig``) to an open ``Sampler``.

Engines are registered by name (``sampling.registry``), each in its own
module: ``hf`` (transformers in process, shared-prefix decoding), ``vllm``
(vLLM in process), ``openai`` (OpenAI-compatible servers) and ``vllm_server``
(a ``vllm serve`` started and stopped here, sampled through the openai
engine). Importing this module imports those modules, which registers them;
they import torch, vLLM or httpx only when an engine opens, so this stays
cheap to import (``LabelConfig`` does, to validate ``sampler``). ``auto`` is
no engine but a rule: :func:`resolve_engine`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from axolotl_sealong.sampling.base import Sampler, vllm_importable
from axolotl_sealong.sampling.options import read_settings
from axolotl_sealong.sampling.registry import ENGINES, MODEL_SETTINGS, EngineSettings

# The built-in engines: importing an engine's module registers it. The order
# is the registry's, the order in which errors and docs list the engines.
# isort: off
from axolotl_sealong.sampling import hf  # noqa: F401, E402
from axolotl_sealong.sampling import vllm  # noqa: F401, E402
from axolotl_sealong.sampling import openai  # noqa: F401, E402
from axolotl_sealong.sampling import server  # noqa: F401, E402
# isort: on

LOG = logging.getLogger(__name__)

AUTO = "auto"


class _SamplerNames(Collection[str]):
    """What ``sampler`` may be: ``auto``, then every registered engine (live)."""

    def __contains__(self, name: object) -> bool:
        return name == AUTO or name in ENGINES

    def __iter__(self) -> Iterator[str]:
        yield AUTO
        yield from ENGINES

    def __len__(self) -> int:
        return 1 + len(ENGINES)


SAMPLERS: Collection[str] = _SamplerNames()


def resolve_engine(name: str) -> str:
    """``auto``: vllm when it imports and a GPU is present, else hf."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")
    if name != AUTO:
        return name
    import torch

    if torch.cuda.is_available() and vllm_importable():
        return "vllm"
    return "hf"


def make_sampler(
    name: str,
    model: str,
    *,
    revision: str | None = None,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    max_model_len: int | None = None,
    **options: Any,
) -> Sampler:
    """Open an engine; ``options`` are that engine's own arguments (its
    ``options`` function's keys: ``vllm=VLLMOptions(...)``, ``method=...``)."""
    engine = resolve_engine(name)
    LOG.info("sampling engine: %s%s", engine, " (auto)" if name == AUTO else "")
    opened: Sampler = ENGINES.get(engine).open(
        model,
        revision=revision,
        adapter=adapter,
        dtype=dtype,
        device=device,
        max_model_len=max_model_len,
        **options,
    )
    return opened


def sampler_from_config(cfg: Any, log_dir: Path | str | None = None) -> Sampler:
    """The engine a ``LabelConfig`` asks for, with that engine's settings only.

    ``log_dir``: where an engine writes its logs (the managed server's).
    """
    name = resolve_engine(cfg.sampler)
    engine = ENGINES.get(name)
    out_dir = Path(log_dir) if log_dir is not None else None
    return make_sampler(
        name,
        **read_settings(cfg, MODEL_SETTINGS),
        **engine.options(EngineSettings(cfg, engine), out_dir),
    )
