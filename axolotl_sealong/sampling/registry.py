"""The engine registry: each engine registers itself, by name, in its own module.

An engine is a name, the function that opens it, the ``LabelConfig`` settings
it reads and how those settings become its options::

    @register_engine("hf", settings=("hf_method", ...), options=_options)
    def open_hf(model, *, revision, adapter, dtype, device, max_model_len, **options):
        return HFSampler(model, ...)

The factory opens every engine the same way: ``open(model, revision=...,
adapter=..., dtype=..., device=..., max_model_len=..., **options)``, the
model settings (``MODEL_SETTINGS``) that every engine gets, plus the engine's
own options; an engine refuses a model setting it cannot honour (the
``openai`` engine refuses ``adapter``). ``options(settings, out_dir)`` turns a
``LabelConfig`` into those options; it sees only the settings the engine
declares (:class:`EngineSettings`), so the declaration is always complete.

Registration runs when the engine's module is imported. Engine modules import
their heavy libraries (torch, transformers, vLLM, httpx) inside functions, so
importing them is cheap; ``factory`` imports the built-in ones, which fills
this registry, and ``LabelConfig`` validates ``sampler`` against it. An engine
of another package registers the same way, from a module imported before a
config names it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from axolotl_sealong.common.registry import Registry

# open(model, *, revision, adapter, dtype, device, max_model_len, **options)
OpenFn = Callable[..., Any]
# (the engine's settings of a LabelConfig, the run's output folder) -> options
OptionsFn = Callable[[Any, Path | None], dict[str, Any]]
F = TypeVar("F", bound=OpenFn)

# open's arguments that every engine gets -> the LabelConfig setting each is
# read from (the factory reads them; an engine's own options come on top)
MODEL_SETTINGS: dict[str, str] = {
    "model": "model",
    "revision": "model_revision",
    "adapter": "adapter",
    "dtype": "dtype",
    "device": "device",
    "max_model_len": "max_model_len",
}


def check_device_unset(engine: str, device: str | None) -> None:
    """For an engine that places the model itself (vLLM in process, the
    managed server): ``device`` may only name the kind of machine."""
    if device not in (None, "cuda", "cpu"):
        raise ValueError(
            f"device {device!r} (sealong_device / --device): the {engine} engine "
            "places the model itself, on the GPUs it sees: unset it (or use cpu / "
            "cuda)"
        )


def _no_options(settings: Any, out_dir: Path | None) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Engine:
    """One sampling engine: how to open it and which settings it takes."""

    name: str
    open: OpenFn
    settings: tuple[str, ...] = ()
    options: OptionsFn = _no_options


ENGINES: Registry[Engine] = Registry("sampler")


def register_engine(
    name: str,
    *,
    settings: Collection[str] = (),
    options: OptionsFn | None = None,
) -> Callable[[F], F]:
    """Decorator: ``open`` becomes the engine ``name``.

    ``settings``: the ``LabelConfig`` settings (besides ``MODEL_SETTINGS``)
    that ``options`` reads; ``options(settings, out_dir)`` returns the keyword
    arguments ``open`` takes besides the model settings (``out_dir``: the run's
    output folder, where an engine may write its logs; may be None).
    """

    def add(fn: F) -> F:
        ENGINES.add(name, Engine(name, fn, tuple(settings), options or _no_options))
        return fn

    return add


class EngineSettings:
    """The settings of a ``LabelConfig`` that one engine declared, and no other.

    What an engine's ``options`` function gets: reading a setting the engine
    did not declare is an error, so ``Engine.settings`` is always the whole
    list of what the engine takes.
    """

    def __init__(self, cfg: Any, engine: Engine) -> None:
        self._cfg = cfg
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._engine.settings:
            raise AttributeError(
                f"engine {self._engine.name!r} reads the setting {name!r}, which "
                "it does not declare: add it to settings= in its register_engine()"
            )
        return getattr(self._cfg, name)
