"""Sampling engines: N reasoning samples per prompt.

``base`` is the interface (``Sampler``, ``SampleRequest``, ``SamplingParams``) and
the helpers every engine shares; ``registry`` holds the engines by name (each
registers itself, in its own module, with the settings it takes);
``factory`` imports the built-in engines and opens one by name or from a
``LabelConfig``; ``options`` is the vLLM settings as one type (``VLLMOptions``).
The engines: ``hf`` (transformers in process; its shared-prefix attention and
token draw in ``hf_kernels``, its packed linears and bf16 prompt cache in
``hf_cpu``), ``vllm`` (vLLM in process), ``openai`` (OpenAI-compatible
servers), ``server`` (a managed ``vllm serve``, sampled through ``openai``; its
interpreter in ``server_env``, command line and plan in ``server_command``,
process in ``server_process``); ``server_args`` holds the server settings the
config checks, ``cuda_env`` what a GPU node offers a vLLM process and
``parallel`` the server's parallel plan. Engines import ``base`` and those
helpers, never ``factory``; engine modules import torch, vLLM or httpx only
inside functions, so importing ``factory`` (and registering every engine) is
cheap. The package imports only the bottom layer (``common``) besides itself:
nothing of ``core``, ``embedding``, ``data``, ``integrations``, ``cli``,
``demo`` or ``bench``.
"""
