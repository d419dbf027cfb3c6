"""Sampling engines: N reasoning samples per prompt.

``base`` is the interface (``Sampler``, ``SampleRequest``, ``SamplingParams``) and
the helpers every engine shares; ``factory`` picks and opens an engine by name.
The engines: ``hf`` (transformers in process, shared-prefix attention and packed
linears), ``vllm`` (vLLM in process), ``openai`` (OpenAI-compatible servers),
``server`` (a managed ``vllm serve``, sampled through ``openai``); ``server_args``
holds the server settings the config checks, ``cuda_env`` what a GPU node offers
a vLLM process and ``parallel`` the server's parallel plan. Engines import
``base`` and those helpers, never ``factory`` (it imports them, lazily); the
package imports only the bottom layer (``common``) besides itself: nothing of
``core``, ``embedding``, ``data``, ``integrations``, ``cli``, ``demo`` or ``bench``.
"""
