"""The Python behind the ``longbench_sealong`` / ``sealong_synth`` lm-eval tasks.

``tasks`` holds the documents, prompts and metrics the task YAMLs call (through
``lm_eval_tasks/.../utils.py``) and where lm-eval finds the task folder. It
imports the core's prompts and metrics, so evaluation scores what labeling
picks; never ``cli``, ``demo`` or ``bench``.
"""
