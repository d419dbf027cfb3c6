"""Write the parallel-plan table of docs/gpu.md from the plan's own code.

For each model config in tests/data/model_configs (the architecture fields of
Llama-3.1-8B-Instruct, Qwen2.5-7B-Instruct and Llama-3.1-70B-Instruct) and 1,
2, 4 and 8 visible H100 80GB (81,559 MiB, as nvidia-smi reports them), the
plan ``axolotl_sealong.sampling.parallel.plan_parallel`` makes for the GPU
recipes' settings (max_model_len 32,768, N 32, max_new_tokens 1,024,
gpu_memory_utilization 0.85). A test (tests/test_gpu_plan.py) fails when the
committed table differs from this output.

    python scripts/gen_plan_table.py            # rewrite the table in docs/gpu.md
    python scripts/gen_plan_table.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axolotl_sealong.sampling.parallel import model_shape, plan_parallel  # noqa: E402

PAGE = ROOT / "docs" / "gpu.md"
START, END = "<!-- plan table: scripts/gen_plan_table.py -->", "<!-- /plan table -->"
MODELS = ("Llama-3.1-8B-Instruct", "Qwen2.5-7B-Instruct", "Llama-3.1-70B-Instruct")
H100_MIB = 81559


def table() -> list[str]:
    lines = [
        "| model | heads / KV heads | TP sizes vLLM accepts | 1 GPU | 2 GPUs "
        "| 4 GPUs | 8 GPUs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        shape = model_shape(str(ROOT / "tests" / "data" / "model_configs" / name))
        assert shape is not None, name
        cells = []
        for gpus in (1, 2, 4, 8):
            try:
                plan = plan_parallel(
                    shape, gpus, H100_MIB, max_model_len=32768, num_samples=32,
                    max_new_tokens=1024,
                )  # fmt: skip
                cells.append(f"{plan.dp} x TP {plan.tp} ({plan.need_gib} GiB)")
            except ValueError:
                cells.append("does not fit: refused")
        valid = ", ".join(map(str, shape.valid_tps(8)))
        lines.append(
            f"| {name} | {shape.heads} / {shape.kv_heads} | {valid} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def render(page: str) -> str:
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + "\n" + "\n".join(table()) + "\n" + END + tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    page = PAGE.read_text()
    new = render(page)
    if args.check:
        if new != page:
            print(f"{PAGE} is out of date: run python scripts/gen_plan_table.py")
            return 1
        return 0
    PAGE.write_text(new)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
