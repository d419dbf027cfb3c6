"""The Python behind the ``longbench_sealong`` / ``sealong_synth`` lm-eval tasks.

``tasks`` holds the hooks the task YAMLs call (through
``lm_eval_tasks/.../utils.py``, which names that module: its path stays);
``rows`` reads and checks the data, ``truncation`` fits prompts to the model,
``discovery`` is where lm-eval finds the task folder. They import the core's
prompts and metrics, so evaluation scores what labeling picks; never ``cli``,
``demo`` or ``bench``.
"""
