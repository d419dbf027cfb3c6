"""The label core: settings, prompts, metrics, MBR scoring, the sample cache, the
labeling pipeline and its diagnostics.

It runs without Axolotl, vLLM or a GPU, so the plugin, the CLI, the lm-eval tasks
and the tests share it. It imports no torch, transformers, axolotl or vllm at
module level (the pipeline opens an engine only when it labels), and nothing from
``data``, ``integrations``, ``cli``, ``demo`` or ``bench``. It may import the
layers below it: ``common`` (model names, row files), ``sampling`` (the
interface and the factory) and ``embedding``.
"""
