"""The engine registry: each engine's name, settings and options, and a new one.

No model loads here: an engine's class is swapped for a recorder where the
test follows a ``LabelConfig`` to the arguments an engine would be opened with.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from axolotl_sealong.core.config import LabelConfig, describe_validation_error
from axolotl_sealong.sampling import hf, openai, server, vllm
from axolotl_sealong.sampling.factory import (
    SAMPLERS,
    make_sampler,
    resolve_engine,
    sampler_from_config,
)
from axolotl_sealong.sampling.options import VLLM_SETTINGS, VLLMOptions
from axolotl_sealong.sampling.registry import (
    ENGINES,
    MODEL_SETTINGS,
    Engine,
    EngineSettings,
    register_engine,
)

# engine -> (its module, the class its open function builds)
CLASSES: dict[str, tuple[Any, str]] = {
    "hf": (hf, "HFSampler"),
    "vllm": (vllm, "VLLMSampler"),
    "openai": (openai, "OpenAISampler"),
    "vllm_server": (server, "VLLMServerSampler"),
}
# settings every engine needs, for a config that validates
NEEDS = {"openai": {"openai_base_urls": "http://127.0.0.1:9/v1"}}


def test_the_built_in_engines_in_order():
    assert list(ENGINES) == ["hf", "vllm", "openai", "vllm_server"]
    assert list(SAMPLERS) == ["auto", *ENGINES] and "auto" in SAMPLERS
    assert "sglang" not in SAMPLERS and len(SAMPLERS) == 5


def test_every_declared_setting_exists_and_every_engine_setting_is_declared():
    """A setting an engine declares is a LabelConfig field; an hf_*, vllm_* or
    openai_* field that no engine declares would reach no engine."""
    fields = set(LabelConfig.model_fields)
    declared = set().union(*(ENGINES.get(name).settings for name in ENGINES))
    assert declared <= fields, declared - fields
    assert set(MODEL_SETTINGS.values()) <= fields
    engine_fields = {f for f in fields if f.startswith(("hf_", "vllm_", "openai_"))}
    assert engine_fields <= declared, engine_fields - declared


@pytest.mark.parametrize("name", list(CLASSES))
def test_a_config_reaches_each_engine_with_what_its_class_takes(name, monkeypatch):
    """sampler_from_config through the registry: the model settings and the
    engine's options, every one an argument of the engine's class."""
    module, cls = CLASSES[name]
    accepted = set(inspect.signature(getattr(module, cls)).parameters)
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, model: str, **kw: Any) -> None:
            seen.update(kw, model=model)

    monkeypatch.setattr(module, cls, Recorder)
    cfg = LabelConfig(
        model="m", sampler=name, max_model_len=4096, **NEEDS.get(name, {})
    )
    assert isinstance(sampler_from_config(cfg), Recorder)
    assert set(seen) <= accepted, set(seen) - accepted
    assert seen["model"] == "m" and seen["max_model_len"] == 4096
    if name in ("vllm", "vllm_server"):
        assert seen["vllm"] == VLLMOptions.from_config(cfg)
    if name == "hf":
        assert seen["method"] == "shared_prefix" and seen["device"] is None


def test_options_see_only_the_settings_an_engine_declares():
    toy = Engine("toy", lambda model, **kw: None, settings=("seed",))
    view = EngineSettings(LabelConfig(seed=3), toy)
    assert view.seed == 3
    with pytest.raises(AttributeError) as err:
        _ = view.num_samples
    text = str(err.value)
    assert "'toy' reads the setting 'num_samples'" in text
    assert "settings= in its register_engine()" in text


def test_vllm_options_come_from_the_config_field_by_field():
    assert [f.name for f in dataclasses.fields(VLLMOptions)] == list(VLLM_SETTINGS)
    cfg = LabelConfig(
        vllm_tensor_parallel_size=2, vllm_data_parallel_size=3,
        vllm_gpu_memory_utilization=0.5, vllm_enforce_eager=True,
        vllm_enable_prefix_caching=False, vllm_max_num_seqs=16, seed=7,
        num_samples=4, max_new_tokens=64,
    )  # fmt: skip
    assert VLLMOptions.from_config(cfg) == VLLMOptions(
        tensor_parallel_size=2, data_parallel_size=3, gpu_memory_utilization=0.5,
        enforce_eager=True, enable_prefix_caching=False, max_num_seqs=16, seed=7,
        num_samples=4, max_new_tokens=64,
    )  # fmt: skip
    plan = VLLMOptions(seed=1).replace(tensor_parallel_size=4)
    assert plan == VLLMOptions(seed=1, tensor_parallel_size=4)


def test_an_unknown_sampler_names_the_setting_the_value_and_the_choices():
    with pytest.raises(ValidationError) as err:
        LabelConfig(sampler="sglang")
    assert describe_validation_error(err.value) == (
        "sealong_sampler (--sampler) = 'sglang': use one of auto, hf, vllm, openai, "
        "vllm_server"
    )
    with pytest.raises(ValueError, match="unknown sampler 'sglang': use one of auto"):
        resolve_engine("sglang")


def test_an_engine_registered_later_is_a_valid_sampler(monkeypatch):
    """A new engine: one module registers it; the config accepts its name and
    the factory opens it with the settings it declared."""
    opened: dict[str, Any] = {}

    def options(settings: Any, out_dir: Any) -> dict[str, Any]:
        return {"n": settings.num_samples, "out_dir": out_dir}

    with pytest.raises(ValidationError):
        LabelConfig(sampler="toy")
    register_engine("toy", settings=("num_samples",), options=options)(
        lambda model, **kw: opened.update(kw, model=model) or "the sampler"
    )
    try:
        cfg = LabelConfig(model="m", sampler="toy", num_samples=5)
        assert sampler_from_config(cfg, log_dir="/labels") == "the sampler"
        assert opened["n"] == 5 and str(opened["out_dir"]) == "/labels"
        assert opened["model"] == "m" and opened["revision"] is None
        assert "toy" in SAMPLERS and list(SAMPLERS)[-1] == "toy"
        with pytest.raises(ValueError, match="sampler 'toy' is already registered"):
            register_engine("toy")(lambda model, **kw: None)
    finally:
        ENGINES.remove("toy")
    with pytest.raises(ValidationError):
        LabelConfig(sampler="toy")


@pytest.mark.parametrize("name", ["vllm", "vllm_server"])
def test_the_vllm_engines_refuse_a_device_before_anything_loads(name):
    with pytest.raises(ValueError) as err:
        make_sampler(name, "/no/model", device="mps")
    assert str(err.value).startswith("device 'mps' (sealong_device / --device): ")
    assert f"the {name} engine places the model itself" in str(err.value)


def test_sealong_check_skips_an_engine_it_has_no_check_for():
    """A registered engine that preflight does not know is reported as not
    checked, not checked as if it were in-process vLLM."""
    from axolotl_sealong.integrations.axolotl import preflight

    register_engine("toy")(lambda model, **kw: None)
    try:
        state = preflight._State(Path("recipe.yml"))
        state.label_cfg = LabelConfig(sampler="toy")
        check = preflight._engine(state)
    finally:
        ENGINES.remove("toy")
    assert check.status == preflight.SKIP
    assert check.summary == "sampler toy: this engine has no environment check"
