"""Long-context training and evaluation data (``sealong data ...``).

- ``musique.build_musique``: MuSiQue-Ans questions in contexts built to a target
  token length, as in the paper (section 1 of the spec).
- ``synth.build_synth``: synthetic multi-hop questions over fictional entities,
  with disjoint entity names between the train and eval splits.
- ``contexts``: the paper's ``Passage i:`` format and the packing to a token
  budget that both share; ``card``: the dataset card and build report. Rows
  are read and written by ``axolotl_sealong.common.rows``.

Nothing here imports axolotl or torch; ``transformers`` is imported only to
load the tokenizer that counts tokens. See ``README.md`` in this folder.
"""

from __future__ import annotations

from axolotl_sealong.common.rows import read_rows
from axolotl_sealong.data.card import write_dataset
from axolotl_sealong.data.contexts import format_context, load_tokenizer
from axolotl_sealong.data.musique import build_musique
from axolotl_sealong.data.synth import build_synth

__all__ = [
    "build_musique",
    "build_synth",
    "format_context",
    "load_tokenizer",
    "read_rows",
    "write_dataset",
]
