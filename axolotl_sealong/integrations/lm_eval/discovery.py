"""Where lm-eval finds the ``longbench_sealong`` tasks, and its command line.

The task YAMLs live in ``lm_eval_tasks/lm_eval/tasks/longbench_sealong/`` (source
checkout) and are installed as ``site-packages/lm_eval/tasks/longbench_sealong/``,
where lm-eval finds them with no flag; elsewhere ``lm_eval_argv`` adds
``--include_path``.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOG = logging.getLogger(__name__)

_TASKS_SUBDIR = Path("lm_eval") / "tasks" / "longbench_sealong"


def _task_dir_candidates() -> list[Path]:
    root = Path(__file__).resolve().parents[3]  # above axolotl_sealong/
    return [
        root / "lm_eval_tasks" / _TASKS_SUBDIR,  # source checkout / editable
        root / _TASKS_SUBDIR,  # wheel: same site-packages as axolotl_sealong
    ]


def task_dir() -> Path:
    """The folder of the ``longbench_sealong`` YAMLs (for ``include_path``)."""
    for candidate in _task_dir_candidates():
        if (candidate / "_template_yaml").is_file():
            return candidate
    tried = ", ".join(str(c) for c in _task_dir_candidates())
    raise FileNotFoundError(
        f"the longbench_sealong task folder is missing (looked in {tried}); "
        "reinstall axolotl-sealong"
    )


def lm_eval_tasks_root() -> Path | None:
    """The directory lm-eval scans by default (None when lm-eval is missing)."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval.tasks")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent


def found_by_default() -> bool:
    """True when lm-eval already indexes our folder with no ``--include_path``."""
    root = lm_eval_tasks_root()
    try:
        return root is not None and task_dir().resolve().is_relative_to(root)
    except FileNotFoundError:
        return False


def lm_eval_argv(args: list[str]) -> list[str]:
    """The lm-eval command line: ``args`` plus ``--include_path`` when needed."""
    if not args or args[0] in ("-h", "--help"):
        return args
    if any(a == "--include_path" or a.startswith("--include_path=") for a in args):
        if not found_by_default():
            LOG.warning(
                "--include_path is set, so %s is not added: lm-eval takes one "
                "include path, and the sealong tasks are not in its own tree",
                task_dir(),
            )
        return args
    if found_by_default():
        return args
    return [*args, "--include_path", str(task_dir())]
