"""axolotl-sealong: SEALONG self-improvement for long-context reasoning.

Subpackages by responsibility: ``core`` (settings, prompts, metrics, MBR, cache,
the labeling pipeline), ``sampling`` (the engine interface, its factory and the
engines), ``embedding``, ``data`` (dataset builders), ``integrations.axolotl``
(the plugin) and ``integrations.lm_eval`` (the eval tasks), ``cli``, ``demo``
and ``bench``. The core imports neither axolotl nor vLLM, so the plugin, the CLI
and the tests all share it. Public names: ``axolotl_sealong.SeaLongPlugin`` and
``SeaLongArgs`` (imported lazily, so ``import axolotl_sealong`` stays light) and
the dataset type ``axolotl_sealong.self_label``.
"""

from __future__ import annotations

from typing import Any

from axolotl_sealong import self_label as self_label

__version__ = "0.1.0"
__all__ = ["SeaLongPlugin", "SeaLongArgs", "self_label", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "SeaLongPlugin":
        from axolotl_sealong.integrations.axolotl.plugin import SeaLongPlugin

        return SeaLongPlugin
    if name == "SeaLongArgs":
        from axolotl_sealong.integrations.axolotl.args import SeaLongArgs

        return SeaLongArgs
    raise AttributeError(f"module 'axolotl_sealong' has no attribute {name!r}")
