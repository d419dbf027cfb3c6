"""The paper's ORPO NLL (response tokens only): the trainer subclass, its loss,
and how Axolotl's RL builder gets it from the plugin."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from axolotl_sealong.integrations.axolotl.orpo import ResponseNLLORPOTrainer, keep_from  # noqa: E402


def test_keep_from_covers_the_earliest_response_token() -> None:
    import torch

    ignore = -100
    labels = torch.tensor(
        [
            [ignore, ignore, ignore, 5, 6, ignore],  # response at 3..4
            [ignore, ignore, ignore, ignore, 7, 8],  # response at 4..5
        ]
    )
    # the logit at position 2 predicts token 3: keep positions 2..5
    assert keep_from(labels) == 4
    assert keep_from(torch.full((2, 6), ignore)) == 6
    assert keep_from(torch.tensor([[1, 2, ignore]])) == 3


def test_the_plugin_picks_the_subclass_for_orpo_with_the_response_nll() -> None:
    from axolotl.utils.dict import DictDefault

    from axolotl_sealong import SeaLongPlugin

    plugin = SeaLongPlugin()
    model = object()
    plugin.post_model_load(DictDefault({}), model)
    cls = plugin.get_trainer_cls(DictDefault({"rl": "orpo"}))
    assert cls is not None and issubclass(cls, ResponseNLLORPOTrainer)
    assert cls.loaded_model is model and ResponseNLLORPOTrainer.loaded_model is None
    response = {"rl": "orpo", "sealong_orpo_nll": "response"}
    assert issubclass(plugin.get_trainer_cls(DictDefault(response)), cls.__base__)
    for other in (
        {"rl": "orpo", "sealong_orpo_nll": "full"},  # TRL's loss: Axolotl's class
        {"rl": "dpo"},
        {},  # sft
    ):
        assert plugin.get_trainer_cls(DictDefault(other)) is None, other
    with pytest.raises(ValueError, match="drop trainer_cls"):
        plugin.get_trainer_cls(DictDefault({"rl": "orpo", "trainer_cls": "a.B"}))


# Axolotl's own trainer setup, in-process: the same path `axolotl train` takes
# from the loaded config to the trainer.
