"""axolotl-sealong: SEALONG self-improvement for long-context reasoning.

The core (prompts, metrics, mbr, embedder, sampling, pipeline) imports neither
axolotl nor vLLM, so the plugin, the CLI and the tests all share it.
"""

from __future__ import annotations

__version__ = "0.1.0"
