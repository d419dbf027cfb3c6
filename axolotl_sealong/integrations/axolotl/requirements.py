"""Packages a recipe needs before Axolotl can load or train it, checked in seconds.

The GPU recipes name two packages that plain ``pip install axolotl-sealong`` does
not bring: flash-attn (``attn_implementation: flash_attention_2``, or the legacy
``flash_attention: true``) and deepspeed (``deepspeed:``, the ZeRO-3 recipe). Both
come with the ``[gpu]`` extra (axolotl's own ``[flash-attn,deepspeed]`` extras),
built against the torch already installed; the install lines below are the ones
the README, ``sealong --help``, docs/install.md and the recipe headers show
(tests/test_recipes.py checks they agree).

The plugin's ``register`` hook runs :func:`check_training_requirements` on the
raw YAML, before Axolotl validates it, so ``axolotl preprocess`` and ``axolotl
train`` stop at once with the key, the value, the package and the install line,
not after labeling or deep inside Axolotl. Packages are looked up with
``importlib.util.find_spec`` (nothing is imported).

When each package is required:

- deepspeed whenever ``deepspeed:`` is set, GPU or not: Axolotl's ``load_cfg``
  (``prepare_optim_env`` -> ``setup_deepspeed_env``) imports it in ``axolotl
  preprocess`` and ``axolotl train`` alike, so without it neither gets past the
  config.
- flash-attn only when a CUDA GPU is visible. Decision: this mirrors Axolotl's
  own check (``check_flash_attn_available``: "CPU-only boxes may just be
  preprocessing for a GPU box"). On a machine with no GPU the recipe cannot
  train anyway, while ``axolotl preprocess`` there (labels through an
  ``openai`` server, or cached labels) never loads the training model, and
  forcing a CUDA build of flash-attn onto such a box would block it for
  nothing. On a GPU node the package is required, even though Axolotl would
  otherwise try a kernels-hub download of a prebuilt flash-attn (network at
  train time, a build for this exact torch, and a version Axolotl has to pin
  around a hub release whose backward pass fails on GQA models such as
  Llama-3.1 and Qwen2.5): a missing package on a GPU node is far more often an
  incomplete install than a choice, and the documented install is flash-attn
  2.8.3. A hub kernel can still be named explicitly (``attn_implementation:
  <org>/<kernel>`` is passed through unchecked), and ``attn_implementation:
  sdpa`` needs no package at all.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

# The torch each GPU path installs first: flash-attn and deepspeed build against
# the torch already there (--no-build-isolation), so it must be the one that stays.
# vllm 0.20.0-0.23.0 pin torch==2.11.0 (docs/results/compat/vllm_range.txt); a trainer
# without vLLM takes axolotl 0.19's newest, 2.13.0 (what CI tests on CPU).
TORCH_ONE_ENV = "2.11.0"
TORCH_TRAINER = "2.13.0"
# What flash-attn 2.8.3's and deepspeed's setup.py import or call while building
# without isolation (a fresh venv has neither wheel nor ninja).
BUILD_TOOLS = "ninja packaging psutil setuptools wheel"
GPU_EXTRA_INSTALL = 'pip install --no-build-isolation "axolotl-sealong[gpu]"'
# One environment: trainer and vLLM together.
INSTALL_ONE_ENV = (
    f"pip install torch=={TORCH_ONE_ENV} {BUILD_TOOLS}",
    'pip install --no-build-isolation "axolotl-sealong[gpu,vllm]"',
)
# Two environments: the trainer's (this) plus scripts/setup_vllm.sh's server env.
INSTALL_TRAINER = (
    f"pip install torch=={TORCH_TRAINER} {BUILD_TOOLS}",
    GPU_EXTRA_INSTALL,
)
DOCS = 'docs/install.md, "GPU machine: the trainer"'
_DEFERRED: ContextVar[bool] = ContextVar("sealong_requirements_deferred", default=False)

_FLASH_PACKAGES = {
    # attn_implementation -> (import name, install)
    "flash_attention_2": (
        "flash_attn",
        f"{GPU_EXTRA_INSTALL} (builds flash-attn 2.8.3 against the torch "
        f"installed here; needs nvcc: {DOCS})",
    ),
    "flash_attention_3": (
        "flash_attn_interface",
        "build FlashAttention-3 from the hopper/ folder of "
        "https://github.com/Dao-AILab/flash-attention (it is not on PyPI)",
    ),
}


@dataclass(frozen=True)
class Requirement:
    """One package a recipe needs, why, and how to get it."""

    package: str  # import name, e.g. "flash_attn", "deepspeed"
    needed_for: str  # the recipe's key and value, e.g. "deepspeed: ds.json"
    install: str  # the documented install line
    importable: bool
    alternative: str = ""  # the other fix: a key to change instead
    only_with_cuda: bool = False  # required only where a CUDA GPU is visible

    def blocks(self, cuda: bool) -> bool:
        """Missing, and required on this machine (``cuda``: a GPU is visible)."""
        return not self.importable and (cuda or not self.only_with_cuda)


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken parent package or __spec__
        return False


def attention_implementation(cfg: Mapping[str, Any]) -> tuple[str | None, str]:
    """The attention backend a config asks for, and the key that says so.

    ``attn_implementation`` wins; else the first legacy boolean flag in
    Axolotl's own priority order (``LEGACY_ATTN_FLAG_TO_IMPL``), as its
    ``normalize_attn_implementation`` maps them. Works on raw YAML and on a
    validated config (where only ``attn_implementation`` is left).
    """
    impl = cfg.get("attn_implementation")
    if impl:
        return str(impl), f"attn_implementation: {impl}"
    from axolotl.utils.schemas.enums import LEGACY_ATTN_FLAG_TO_IMPL

    for flag, canonical in LEGACY_ATTN_FLAG_TO_IMPL.items():
        if cfg.get(flag):
            return canonical, f"{flag}: true"
    return None, ""


def training_requirements(cfg: Mapping[str, Any]) -> list[Requirement]:
    """What this recipe needs installed on the GPU node that trains it.

    Every requirement is listed whether or not it is installed (``importable``)
    and whether or not this machine has a GPU (``only_with_cuda``):
    :func:`check_training_requirements` decides what is missing here.
    """
    out: list[Requirement] = []
    impl, key = attention_implementation(cfg)
    if impl in _FLASH_PACKAGES:
        package, install = _FLASH_PACKAGES[impl]
        change = (
            "set attn_implementation: sdpa"
            if key.startswith("attn_implementation")
            else f"replace {key} with attn_implementation: sdpa"
        )
        out.append(
            Requirement(
                package=package,
                needed_for=key,
                install=install,
                importable=_importable(package),
                alternative=f"{change} (PyTorch's own attention, no package)",
                only_with_cuda=True,
            )
        )
    deepspeed = cfg.get("deepspeed")
    if deepspeed:
        shown = deepspeed if isinstance(deepspeed, str) else "{...}"
        out.append(
            Requirement(
                package="deepspeed",
                needed_for=f"deepspeed: {shown}",
                install=f"{GPU_EXTRA_INSTALL} (deepspeed 0.18.x, built against "
                f"the torch installed here: {DOCS})",
                importable=_importable("deepspeed"),
                alternative="remove deepspeed: to train without ZeRO (a one-GPU "
                "recipe such as llama31_8b_orpo.yml)",
            )
        )
    return out


def missing_requirements(
    cfg: Mapping[str, Any], *, cuda: bool | None = None
) -> list[Requirement]:
    """The requirements of ``cfg`` not installed here; ``cuda``: GPU visible
    (default: ``torch.cuda.is_available()``, asked only if it matters)."""
    missing = [r for r in training_requirements(cfg) if not r.importable]
    if any(r.only_with_cuda for r in missing) and cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return [r for r in missing if r.blocks(bool(cuda))]


def describe(req: Requirement) -> str:
    """One missing requirement as a sentence: key, value, package, both fixes."""
    when = " on a GPU" if req.only_with_cuda else ""
    return (
        f"{req.needed_for} needs the {req.package} package{when}, which is not "
        f"installed in this environment ({sys.executable}). Install it: "
        f"{req.install}; or {req.alternative}."
    )


def check_training_requirements(
    cfg: Mapping[str, Any], *, cuda: bool | None = None
) -> None:
    """Stop with one ValueError naming every missing package and its fix."""
    missing = missing_requirements(cfg, cuda=cuda)
    if not missing:
        return
    lines = [describe(r) for r in missing]
    if len(lines) == 1:
        raise ValueError(lines[0])
    raise ValueError(
        f"{len(lines)} packages this recipe needs are missing:\n"
        + "\n".join(f"- {line}" for line in lines)
    )


@contextmanager
def deferred() -> Iterator[None]:
    """Inside it, the plugin's ``register`` hook does not check packages: for a
    caller that loads a recipe and reports the packages itself (``sealong
    check``). Everything else about loading is unchanged."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def is_deferred() -> bool:
    """Whether the current code runs inside :func:`deferred`."""
    return _DEFERRED.get()
