"""Plugin settings merged into Axolotl's config schema (``get_input_args``).

Every self-labeling setting of :class:`~axolotl_sealong.core.config.LabelConfig` is a
flat top-level key with the ``sealong_`` prefix (Axolotl drops unknown keys and
keys inside ``datasets:`` entries, so they cannot live there). The fields are
generated from ``LabelConfig`` so names, descriptions and checks never drift;
the plugin-only keys are declared below.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from axolotl_sealong.core.config import (
    YAML_PREFIX,
    LabelConfig,
    describe_validation_error,
)

STRATEGY = "axolotl_sealong.self_label"
RL_FOR_MODE = {"orpo": "orpo", "dpo": "dpo", "sft": None}


def _ds_type(ds: Any) -> Any:
    # raw YAML gives dicts; some validation stages hold pydantic dataset models
    return ds.get("type") if isinstance(ds, dict) else getattr(ds, "type", None)


def self_label_entries(data: Any) -> list[Any]:
    """The ``datasets:`` entries the plugin must label."""
    return [ds for ds in (data.get("datasets") or []) if _ds_type(ds) == STRATEGY]


class _SeaLongPluginArgs(BaseModel):
    sealong_mode: Literal["orpo", "dpo", "sft"] | None = Field(
        default=None,
        json_schema_extra={
            "description": "What to train on: orpo/dpo (chosen = MBR best, rejected "
            "= low-scoring sample; needs the matching `rl:`) or sft (best sample). "
            "Default: from `rl:` (orpo, dpo, or sft when unset)."
        },
    )
    sealong_output_dir: str | None = Field(
        default=None,
        json_schema_extra={
            "description": "Where labeled rows go (a sub-folder per settings hash). "
            "Default: <dataset_prepared_path or last_run_prepared>/sealong."
        },
    )
    sealong_on_long: Literal["error", "drop"] = Field(
        default="error",
        json_schema_extra={
            "description": "Labeled rows longer than sequence_len: error (stop, with "
            "counts, before training) or drop (remove them and log the counts). "
            "Axolotl alone would drop them with only a warning."
        },
    )

    sealong_orpo_nll: Literal["response", "full"] = Field(
        default="response",
        json_schema_extra={
            "description": "ORPO's NLL term over the response tokens (the paper's "
            "XTuner objective) or over prompt + response (TRL's ORPOTrainer as "
            "Axolotl runs it). With long contexts `full` mostly trains the model "
            "to reproduce its prompt."
        },
    )

    sealong_global_batch_size: int | None = Field(
        default=None,
        gt=0,
        json_schema_extra={
            "description": "The global batch the recipe is meant for: rows (ORPO/DPO "
            "pairs) per optimizer step over all ranks. When training begins the "
            "plugin logs ranks x micro_batch_size x gradient_accumulation_steps and "
            "warns, with the fix, when the launch gives another number (a one-GPU "
            "recipe started on 8 GPUs). Unset: only logged."
        },
    )

    @model_validator(mode="before")
    @classmethod
    def check_sealong(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        keys = {k: v for k, v in data.items() if k.startswith(YAML_PREFIX)}
        try:
            LabelConfig.from_yaml_dict(keys | {"base_model": data.get("base_model")})
        except ValidationError as err:
            raise ValueError(describe_validation_error(err)) from None
        mode = data.get("sealong_mode")
        rl = data.get("rl")
        rl = getattr(rl, "value", rl)
        if mode and self_label_entries(data) and RL_FOR_MODE[mode] != rl:
            want = RL_FOR_MODE[mode]
            fix = f"set `rl: {want}`" if want else "remove `rl:`"
            raise ValueError(
                f"sealong_mode: {mode} does not match rl: {rl}: {fix}, or change "
                "sealong_mode"
            )
        if self_label_entries(data) and rl not in (None, "orpo", "dpo"):
            raise ValueError(
                f"rl: {rl} is not supported by {STRATEGY} datasets: use rl: orpo "
                "(the paper), rl: dpo, or no rl (SFT on the best sample)"
            )
        return data


def _field(name: str) -> tuple[Any, Any]:
    info = LabelConfig.model_fields[name]
    annotation: Any = info.annotation
    return (
        annotation | None,
        Field(default=None, json_schema_extra={"description": info.description}),
    )


SeaLongArgs = create_model(  # type: ignore[call-overload]
    "SeaLongArgs",
    __base__=_SeaLongPluginArgs,
    __doc__="Settings of axolotl_sealong.SeaLongPlugin (sealong_* keys).",
    **{YAML_PREFIX + name: _field(name) for name in LabelConfig.model_fields},
)
