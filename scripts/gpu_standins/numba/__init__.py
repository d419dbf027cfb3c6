"""A stand-in for numba on the bare GPU machine; NOT numba.

Axolotl 0.19 imports numba when it loads (``axolotl/utils/samplers/
multipack.py``) for one thing: the ``@numba.njit`` bin packing of sample
packing, which RL training (``rl: orpo``) never uses. numba needs llvmlite,
whose wheel (60 MB) is over what may travel to the GPU machine, so the GPU
check's training stage (``axolotl_sealong/bench/gpu_train.py``) puts this
folder on ``PYTHONPATH`` when, and only when, numba is not installed, and says
so in its JSON. The decorators return functions that raise if called, so
anything that does need numba fails loudly instead of running without it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

SEALONG_STANDIN = True


def _refuse(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{fn.__qualname__} needs numba, which is not installed here (the GPU "
            "check puts a stand-in in its place): sample packing cannot run; "
            "install numba to use it"
        )

    return call


def njit(*args: Any, **kwargs: Any) -> Any:
    """``@njit`` or ``@njit(...)``: the function, made to refuse every call."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return _refuse(args[0])
    return _refuse


jit = njit
