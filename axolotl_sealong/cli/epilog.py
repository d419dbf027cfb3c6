"""`sealong --help`'s closing lines: the GPU install and where to go next.

The install lines are ``requirements.py``'s, the ones the plugin's
missing-package error, the README, docs/install.md and the GPU recipes show
(tests/test_recipes.py checks they agree). Light: no torch or axolotl import.
"""

from __future__ import annotations

from axolotl_sealong.integrations.axolotl.requirements import (
    INSTALL_ONE_ENV,
    INSTALL_TRAINER,
)


def _indented(commands: tuple[str, ...]) -> str:
    return "\n".join("    " + c for c in commands)


GPU_EPILOG = (
    "GPU install: torch first; flash-attn 2.8.3 and deepspeed then build\n"
    "against it (needs nvcc). One environment, with vllm 0.20.0-0.23.0 beside\n"
    "axolotl 0.19:\n"
    f"{_indented(INSTALL_ONE_ENV)}\n"
    "or the trainer alone, plus any vLLM in a second environment:\n"
    f"{_indented(INSTALL_TRAINER)}\n"
    "    SEALONG_VLLM_SPEC=vllm==X bash scripts/setup_vllm.sh\n"
    "The GPU recipes sample with sealong_sampler: vllm_server (a `vllm serve`\n"
    "the run starts and stops) from sealong_vllm_server_python, else this env\n"
    "if vllm imports, else $SEALONG_VLLM_PYTHON, else .venv-vllm.\n"
    "Then: axolotl train RECIPE.yml (a one-GPU recipe on a bigger node:\n"
    "CUDA_VISIBLE_DEVICES=0 axolotl train RECIPE.yml), or sealong label\n"
    "--config RECIPE.yml --out DIR.\n"
    "GPU check: bash scripts/gpu_check.sh (sealong bench gpu)."
)
