"""Where SEALONG meets other tools: ``axolotl`` (the training plugin) and
``lm_eval`` (the evaluation tasks' Python).

Each subpackage may import the core, the engines and ``data``; the core never
imports these.
"""
