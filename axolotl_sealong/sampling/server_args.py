"""The ``vllm_server`` engine's settings that the config checks without the engine.

``LabelConfig`` validates ``sealong_vllm_server_args`` when it is read, with
``parse_server_args``; the engine's command line (``server_command``) reads
the parallel sizes a user put there. Nothing here imports anything else of
``sampling``.
"""

from __future__ import annotations

import shlex

# Flags this engine sets itself: a second copy in vllm_server_args would
# break it (another port or model name than the one the client talks to).
MANAGED_FLAGS = ("--host", "--port", "--model", "--served-model-name", "--lora-modules")


def setting_name(name: str) -> str:
    """How errors name a setting: its YAML key and its CLI flag."""
    return f"sealong_{name} (--{name.replace('_', '-')})"


def parse_server_args(value: str | None, named: bool = True) -> list[str]:
    """``vllm_server_args`` as a list; refuses the flags this engine manages.

    ``named=False``: the message without the setting's name (pydantic adds it).
    """
    field = f"{setting_name('vllm_server_args')} = {value!r}: " if named else ""
    try:
        args = shlex.split(value or "")
    except ValueError as err:
        raise ValueError(f"{field}cannot split it: {err}") from None
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in MANAGED_FLAGS:
            raise ValueError(
                f"{field}{flag} is set by the vllm_server engine itself; remove "
                "it (the port is sealong_vllm_server_port, the model "
                "sealong_model, the adapter sealong_adapter)"
            )
    return args


# vLLM's spellings of the parallel sizes (arg_utils.py: "--tensor-parallel-size",
# "-tp"; "--data-parallel-size", "-dp"; the same in 0.20.0, 0.23.0 and 0.34.0)
TP_FLAGS = ("--tensor-parallel-size", "-tp")
DP_FLAGS = ("--data-parallel-size", "-dp")


def extra_flag(args: list[str], names: tuple[str, ...]) -> str | None:
    """The last value given to one of ``names`` (``--x 2`` or ``--x=2``)."""
    found = None
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in names:
            if eq:
                found = value
            elif i + 1 < len(args):
                found = args[i + 1]
    return found


def extra_flag_int(args: list[str], names: tuple[str, ...]) -> int | None:
    value = extra_flag(args, names)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"{setting_name('vllm_server_args')}: {names[0]} {value!r} is not a "
            "whole number"
        ) from None


def extra_flag_float(args: list[str], names: tuple[str, ...]) -> float | None:
    value = extra_flag(args, names)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(
            f"{setting_name('vllm_server_args')}: {names[0]} {value!r} is not a number"
        ) from None
