"""axolotl-sealong: SEALONG self-improvement for long-context reasoning.

The core (prompts, metrics, mbr, embedder, sampling, pipeline) imports neither
axolotl nor vLLM, so the plugin, the CLI and the tests all share it. The plugin
class is imported lazily, so ``import axolotl_sealong`` stays light.
"""

from __future__ import annotations

from typing import Any

from axolotl_sealong import self_label as self_label

__version__ = "0.1.0"
__all__ = ["SeaLongPlugin", "SeaLongArgs", "self_label", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "SeaLongPlugin":
        from axolotl_sealong.plugin import SeaLongPlugin

        return SeaLongPlugin
    if name == "SeaLongArgs":
        from axolotl_sealong.args import SeaLongArgs

        return SeaLongArgs
    raise AttributeError(f"module 'axolotl_sealong' has no attribute {name!r}")
