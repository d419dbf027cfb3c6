"""``sealong iterate``: SEALONG round after round on any recipe.

Round ``r`` labels questions with the model of round ``r-1`` (``axolotl
preprocess``), trains (``axolotl train``), merges a LoRA and evaluates with
lm-eval; every finished stage is recorded, so a killed run resumes. By concern:

- ``run``: the command (``run_iterate``): checks, resume, ``--from-run``;
- ``loop``: the rounds (``Iteration``): which model samples and trains on
  which rows, stage by stage;
- ``policy``: the round policies (``RoundPolicy``: its fields are the flags,
  their descriptions the help) and the diversity guard's steps;
- ``state``: ``OUT/state.json`` (versioned) and the stages in it;
- ``records``: the typed record each stage writes there, and a round's result;
- ``commands``: the subprocesses (axolotl, lm-eval) and the LoRA merge;
- ``runs``: what a labels folder says (signals, gaps, the bounded union's pick);
- ``report``, ``markdown``, ``plots``, ``stats``: ``report.json``,
  ``report.md``, the PNGs and the bootstrap intervals.

``sealong demo`` (``axolotl_sealong.demo``) runs this loop on the embedded
model. It may import ``common``, ``sampling``, ``embedding``, ``core``,
``data`` and ``integrations``; nothing from ``cli``, ``demo`` or ``bench``.
"""
