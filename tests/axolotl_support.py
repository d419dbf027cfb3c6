"""Settings the tests' Axolotl recipes share: a 2-step LoRA run of a tiny model."""

from __future__ import annotations

from typing import Any

# LoRA r=4 on every linear, one row per step, two steps, float32 on the CPU.
TINY_LORA_TRAINING: dict[str, Any] = {
    "adapter": "lora",
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "lora_target_linear": True,
    "micro_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "num_epochs": 1,
    "max_steps": 2,
    "optimizer": "adamw_torch",
    "learning_rate": 1e-4,
    "bf16": False,
    "fp16": False,
}
