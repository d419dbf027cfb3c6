"""The global batch is logged when training starts, and a launch that changes it: the
slow half (models, end-to-end runs); the fast half is tests/test_global_batch.py.
"""

from __future__ import annotations

import logging

from builders import orpo_pairs_recipe

from axolotl_sealong.integrations.axolotl.batch import (
    GlobalBatch,
    GlobalBatchCallback,
)

ROWS = [
    {"prompt": "the context goes on " * 8 + "question?", "chosen": " right answer",
     "rejected": " wrong"},
    {"prompt": "short question?", "chosen": " yes it is", "rejected": " no"},
]  # fmt: skip


def test_a_real_training_run_logs_and_warns(tiny_llama_dir, tmp_path):
    """Axolotl's own config loading, model, trainer builder and ``train()``:
    the plugin's callback is attached and fires at train begin (1 process x 1 x
    2 = 2 rows per step, the recipe says 4)."""
    import datasets
    from axolotl.cli.config import load_cfg
    from axolotl.train import setup_model_and_tokenizer
    from axolotl.utils.trainer import setup_trainer

    path = orpo_pairs_recipe(
        tmp_path,
        tiny_llama_dir,
        ROWS,
        gradient_accumulation_steps=2,
        max_steps=1,
        sealong_global_batch_size=4,
        save_strategy="no",
    )
    cfg = load_cfg(str(path))
    assert cfg["sealong_global_batch_size"] == 4  # the plugin's key survived
    model, tokenizer, peft_config, _ = setup_model_and_tokenizer(cfg)
    trainer = setup_trainer(
        cfg=cfg,
        train_dataset=datasets.Dataset.from_list(ROWS),
        eval_dataset=None,
        model=model,
        tokenizer=tokenizer,
        processor=None,
        total_num_steps=1,
        peft_config=peft_config,
    )
    (callback,) = [
        c
        for c in trainer.callback_handler.callbacks
        if isinstance(c, GlobalBatchCallback)
    ]
    # Axolotl reconfigures the root logger while it sets up (its dictConfig drops
    # pytest's capture handler), so listen on the plugin's logger itself.
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("axolotl_sealong")
    logger.addHandler(handler)
    try:
        trainer.train()
    finally:
        logger.removeHandler(handler)
    assert callback.batch == GlobalBatch(1, 1, 1, 1, 2)
    info = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert (
        "sealong: global batch = 1 rank x micro_batch_size 1 x "
        "gradient_accumulation_steps 2 = 2" in info
    )
    (warning,) = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert "sealong_global_batch_size: 4" in warning
    assert "set gradient_accumulation_steps: 4 for 1 rank" in warning
    assert trainer.state.global_step == 1
