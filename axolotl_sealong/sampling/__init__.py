"""Sampling engines: N reasoning samples per prompt.

``base`` is the interface (``Sampler``, ``SampleRequest``, ``SamplingParams``) and
the helpers every engine shares; ``factory`` picks and opens an engine by name.
The engines: ``hf`` (transformers in process, shared-prefix attention and packed
linears), ``vllm`` (vLLM in process), ``openai`` (OpenAI-compatible servers),
``server`` (a managed ``vllm serve``, sampled through ``openai``); ``server_args``
holds the server settings the config checks. Engines import ``base`` and
``core`` helpers, never ``factory`` (it imports them, lazily); nothing here
imports ``integrations``, ``cli``, ``demo`` or ``bench``.
"""
