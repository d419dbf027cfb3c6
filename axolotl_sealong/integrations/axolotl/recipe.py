"""An Axolotl recipe read the plugin's way, for the plugin and ``sealong label``.

``sealong label --config recipe.yml`` and ``axolotl train recipe.yml`` must send
the same prompts (so one warms the other's sample cache) and label the same
questions. Both call the two functions here: :func:`label_config` (the
``sealong_*`` keys, with prompts sized to ``sequence_len``) and
:func:`read_questions` (every ``type: axolotl_sealong.self_label`` entry, read
by Axolotl's own dataset loader).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from axolotl_sealong.core.config import YAML_PREFIX, LabelConfig
from axolotl_sealong.integrations.axolotl.args import STRATEGY, self_label_entries

LOG = logging.getLogger(__name__)


def label_config(cfg: Mapping[str, Any]) -> LabelConfig:
    """LabelConfig from a recipe's ``sealong_*`` keys (``base_model`` as the model).

    Without an explicit ``sealong_max_model_len`` a prompt must leave room for
    ``max_new_tokens`` inside ``sequence_len`` (capped at the model's own
    limit), so labeled rows fit the trainer by construction; the overlong
    policy (skip or truncate_middle) applies to the rest.
    """
    from axolotl_sealong.sampling.base import model_max_positions

    if not cfg.get("base_model") and not cfg.get(YAML_PREFIX + "model"):
        # Axolotl refuses such a recipe; without this, `sealong label --config`
        # silently labeled with LabelConfig's default (the embedded model).
        raise ValueError(
            f"base_model is not set (got {cfg.get('base_model')!r}): the recipe "
            "names no model to label with: add `base_model: <folder or hub id>` "
            "(the model Axolotl trains, which also samples its labels), or name "
            "the sampling model with `sealong_model:` / --model"
        )
    label_cfg = LabelConfig.from_yaml_dict(dict(cfg))
    seq = cfg.get("sequence_len")
    if label_cfg.max_model_len is None and seq:
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValueError(
                f"sequence_len: {seq!r} is not a positive integer: set it to the "
                "training context length in tokens"
            )
        if seq <= label_cfg.max_new_tokens:
            raise ValueError(
                f"sequence_len {seq} leaves no room for a prompt after "
                f"sealong_max_new_tokens {label_cfg.max_new_tokens}: raise "
                "sequence_len or lower sealong_max_new_tokens"
            )
        limit = model_max_positions(label_cfg.model, label_cfg.model_revision)
        label_cfg = label_cfg.model_copy(
            update={"max_model_len": min(seq, limit) if limit else seq}
        )
    return label_cfg


def _entry(ds: Any, index: int, base_dir: Path | None) -> Any:
    """One ``datasets:`` entry as Axolotl's loader takes it (relative paths
    also tried against ``base_dir``, the recipe's folder, for the CLI)."""
    from axolotl.utils.dict import DictDefault

    entry = DictDefault(dict(ds))
    if not entry.get("path"):
        raise ValueError(
            f"datasets[{index}] (type: {STRATEGY}) has no path: set it to the "
            "questions file (jsonl, json, parquet) or a Hugging Face dataset id"
        )
    path = Path(str(entry.path)).expanduser()
    if base_dir is not None and not path.is_absolute() and not path.exists():
        beside = base_dir / path
        if beside.exists():
            LOG.info("datasets[%d]: %s read from the recipe's folder", index, beside)
            entry["path"] = str(beside)
    return entry


def read_questions(
    cfg: Mapping[str, Any], base_dir: Path | None = None
) -> list[dict[str, Any]]:
    """Rows of every self-label entry, in order, read by Axolotl's own loader.

    The loader is the one ``axolotl train`` uses for any dataset (local
    files, hub ids with ``name``/``split``, ``data_files``). Where Axolotl is
    not installed (the vLLM venv), local files are read with the package's
    row reader and anything else is refused with a clear error.
    """
    labeled = self_label_entries(cfg)
    entries = [
        (i, ds)
        for i, ds in enumerate(cfg.get("datasets") or [])
        if any(ds is entry for entry in labeled)
    ]
    if not entries:
        raise ValueError(
            f"no datasets: entry has type: {STRATEGY}: add one that holds the "
            "questions, or pass --data"
        )
    try:
        from axolotl.utils.data.shared import load_dataset_with_config
    except ImportError:
        return _read_local(entries, base_dir)
    rows: list[dict[str, Any]] = []
    for index, ds in entries:
        entry = _entry(ds, index, base_dir)
        try:
            dataset = load_dataset_with_config(
                entry, cfg.get("hf_use_auth_token"), streaming=False
            )
        except Exception as err:  # noqa: BLE001 - any loader failure: name the entry
            raise ValueError(
                f"datasets[{index}] (path {entry.path!r}): Axolotl's loader could "
                f"not read it: {type(err).__name__}: {err}"
            ) from err
        if hasattr(dataset, "keys") and not hasattr(dataset, "to_list"):
            splits = list(dataset.keys())  # a DatasetDict: no split was named
            if len(splits) != 1:
                raise ValueError(
                    f"datasets[{index}] (path {entry.path!r}) has splits "
                    f"{splits}: set `split:` to the one with the questions"
                )
            dataset = dataset[splits[0]]
        rows.extend(dataset.to_list())
    return rows


def _read_local(entries: list[tuple[int, Any]], base_dir: Path | None) -> list[Any]:
    from axolotl_sealong.common.rows import read_rows

    rows: list[dict[str, Any]] = []
    for index, ds in entries:
        raw = ds.get("path") if hasattr(ds, "get") else None
        path = Path(str(raw or "")).expanduser()
        if base_dir is not None and not path.is_absolute() and not path.exists():
            path = base_dir / path
        if not raw or not path.is_file():
            raise ValueError(
                f"datasets[{index}] (path {raw!r}): without Axolotl installed only "
                "local files are read: point path at a .jsonl/.json/.parquet file, "
                "or pass --data"
            )
        rows.extend(read_rows(path))
    return rows
