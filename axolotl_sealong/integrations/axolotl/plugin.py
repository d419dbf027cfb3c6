"""``axolotl_sealong.SeaLongPlugin``: self-label the questions, then let Axolotl train.

Axolotl calls ``load_datasets`` before it loads the training model. There we run
the core pipeline on every ``datasets:`` entry whose ``type`` is
``axolotl_sealong.self_label`` (cached under a hash of the settings and data),
free the sampling model, check row lengths against ``sequence_len``, and hand
the rows to Axolotl's own loaders so templating and caching stay Axolotl's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from axolotl.integrations.base import BasePlugin

from axolotl_sealong.core.pipeline import DIAGNOSTICS_FILE, PREFERENCE_FILE, SFT_FILE
from axolotl_sealong.integrations.axolotl.args import self_label_entries

if TYPE_CHECKING:
    from axolotl_sealong.core.config import LabelConfig
    from axolotl_sealong.integrations.axolotl.distributed import RankInfo

LOG = logging.getLogger("axolotl_sealong")

# How Axolotl should read our rows, per training mode.
ROW_FILE = {"orpo": PREFERENCE_FILE, "dpo": PREFERENCE_FILE, "sft": SFT_FILE}
ROW_TYPE = {
    "orpo": "chat_template.argilla",
    "dpo": "chat_template.argilla_chat",
    "sft": "chat_template",
}


class SeaLongPlugin(BasePlugin):
    """SEALONG self-labeling (sample N, MBR-score, chosen/rejected) before training."""

    _model: Any = None  # the loaded training model (post_model_load)

    def get_input_args(self) -> str:
        return "axolotl_sealong.integrations.axolotl.args.SeaLongArgs"

    def register(self, cfg: Any) -> None:
        # Runs on the raw YAML before validation: let recipes name the embedded
        # model instead of a machine-specific path.
        import os

        from axolotl_sealong.common.models import resolve_model

        # Axolotl shows axolotl* records at AXOLOTL_LOG_LEVEL, but ours inherit
        # the root's WARNING: without this the counts, skips and cache hits of
        # the labeling run would not be shown.
        level = os.environ.get("AXOLOTL_LOG_LEVEL", "INFO").upper()
        logging.getLogger("axolotl_sealong").setLevel(level)

        for key in ("base_model", "base_model_config", "tokenizer_config"):
            value = cfg.get(key)
            if isinstance(value, str) and value.startswith("embedded:"):
                cfg[key] = resolve_model(value)
        hide_secrets(cfg)
        # flash-attn / deepspeed missing: stop now, with the install line, not
        # after labeling or inside Axolotl (requirements.py says when each counts)
        from axolotl_sealong.integrations.axolotl.requirements import (
            check_training_requirements,
            is_deferred,
        )

        if not is_deferred():  # `sealong check` reports them itself
            check_training_requirements(cfg)

    def post_model_load(self, cfg: Any, model: Any) -> None:
        # The model as the trainer gets it (adapters on): the last load hook,
        # right before Axolotl returns it. See get_trainer_cls for why.
        self._model = model

    def get_trainer_cls(self, cfg: Any) -> type | None:
        """The paper's ORPO (NLL over the response only; ``orpo.py`` here).

        Axolotl's RL builder asks plugins for the trainer class before its
        own ``rl:`` choice, and constructs a plugin's class without the model
        (axolotl PR #2883): the class gets the one ``post_model_load`` saw.
        None for everything else, so Axolotl's (or another plugin's) applies.
        """
        if not response_nll(cfg):
            return None
        if cfg.get("trainer_cls"):
            # Axolotl ignores trainer_cls when a plugin returns a class.
            raise ValueError(
                f"trainer_cls: {cfg['trainer_cls']} and SEALONG's ORPO trainer "
                "(sealong_orpo_nll: response) cannot both apply: drop trainer_cls, "
                "or set sealong_orpo_nll: full for TRL's NLL term"
            )
        from axolotl_sealong.integrations.axolotl.orpo import ResponseNLLORPOTrainer

        return ResponseNLLORPOTrainer.for_model(self._model)

    def post_trainer_create(self, cfg: Any, trainer: Any) -> None:
        # Axolotl takes the first plugin's trainer class: another plugin listed
        # before this one would silently train with TRL's NLL term.
        if not response_nll(cfg):
            return
        from axolotl_sealong.integrations.axolotl.orpo import ResponseNLLORPOTrainer

        if not isinstance(trainer, ResponseNLLORPOTrainer):
            raise ValueError(
                f"another plugin's trainer ({type(trainer).__name__}) replaced "
                "SEALONG's ORPO trainer: list axolotl_sealong.SeaLongPlugin "
                "first, or set sealong_orpo_nll: full for TRL's NLL term"
            )

    def add_callbacks_post_trainer(self, cfg: Any, trainer: Any) -> list[Any]:
        # Logs ranks x micro_batch_size x gradient_accumulation_steps when training
        # begins (the trainer's own world size), warns if not sealong_global_batch_size.
        from axolotl_sealong.integrations.axolotl.batch import GlobalBatchCallback

        return [GlobalBatchCallback(cfg.get("sealong_global_batch_size"), cfg)]

    def get_training_args(self, cfg: Any) -> dict[str, Any] | None:
        # transformers refuses bf16 without a GPU unless use_cpu is set, and
        # Axolotl never sets it; on a CPU with native bf16 (AVX512-BF16, AMX) an
        # ORPO + LoRA step ran 1.2x faster than float32 (29.6 -> 25.0 s).
        import torch

        if cfg.get("bf16") is True and not torch.cuda.is_available():
            LOG.info("sealong: bf16 on a CPU: passing use_cpu=True to the trainer")
            return {"use_cpu": True}
        return None

    def load_datasets(self, cfg: Any, preprocess: bool = False) -> Any:
        if not self_label_entries(cfg):
            return None
        return load_self_labeled(cfg)


# Secrets taken out of Axolotl's config before it logs it (its "config:" log
# line, copied to output_dir/debug.log): the config keeps a token naming the
# secret in this process; label_settings swaps it back for the labeling run.
_HIDDEN: dict[str, str] = {}
_TOKEN = "[hidden by axolotl_sealong: "


def hide_secrets(cfg: Any) -> None:
    """Replace ``sealong_*`` secrets in Axolotl's config by tokens.

    Axolotl logs its whole config after plugins register and tees the log to
    ``output_dir/debug.log``; it redacts only its own key fields. Its
    "config-loaded" telemetry event (on unless AXOLOTL_DO_NOT_TRACK=1) comes
    before any plugin runs, so a key is safest in $OPENAI_API_KEY, not a YAML.
    """
    import secrets

    from axolotl_sealong.core.config import SECRET_FIELDS, YAML_PREFIX

    for name in SECRET_FIELDS:
        key = YAML_PREFIX + name
        value = cfg.get(key)
        if isinstance(value, str) and not value.startswith(_TOKEN):
            token = f"{_TOKEN}{secrets.token_hex(8)}]"
            _HIDDEN[token] = value
            cfg[key] = token


def _reveal(cfg: Any) -> Any:
    """The config with hidden secrets put back (for LabelConfig only)."""
    from axolotl_sealong.core.config import SECRET_FIELDS, YAML_PREFIX

    keys = [YAML_PREFIX + name for name in SECRET_FIELDS]
    tokens = {k: cfg.get(k) for k in keys if str(cfg.get(k)).startswith(_TOKEN)}
    if not tokens:
        return cfg
    missing = [k for k, t in tokens.items() if t not in _HIDDEN]
    if missing:
        raise ValueError(
            f"{', '.join(missing)} was hidden by another process: set "
            "$OPENAI_API_KEY instead of the YAML key"
        )
    return {**dict(cfg), **{k: _HIDDEN[t] for k, t in tokens.items()}}


def training_mode(cfg: Any) -> str:
    if cfg.get("sealong_mode"):
        return str(cfg["sealong_mode"])
    rl = getattr(cfg.get("rl"), "value", cfg.get("rl"))
    return str(rl) if rl in ("orpo", "dpo") else "sft"


def response_nll(cfg: Any) -> bool:
    """ORPO with the paper's NLL term (``sealong_orpo_nll: response``)."""
    return training_mode(cfg) == "orpo" and cfg.get("sealong_orpo_nll") != "full"


def _read_questions(cfg: Any) -> list[dict[str, Any]]:
    """Rows of every self-label entry (``recipe.read_questions``, as the CLI)."""
    from axolotl_sealong.integrations.axolotl.recipe import read_questions

    return read_questions(cfg)


def label_settings(cfg: Any) -> Any:
    """LabelConfig of the recipe (``recipe.label_config``, as the CLI reads it)."""
    from axolotl_sealong.integrations.axolotl.recipe import label_config

    return label_config(_reveal(cfg))


def _row_length(tokenizer: Any, template: str, messages: list[dict[str, str]]) -> int:
    ids = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def fit_rows(cfg: Any, src: Path, dst: Path, mode: str) -> dict[str, int]:
    """Check labeled rows against ``sequence_len``: error or drop, with counts."""
    from axolotl.loaders.tokenizer import load_tokenizer
    from axolotl.utils.chat_templates.base import get_chat_template_from_config

    from axolotl_sealong.common.rows import read_rows, write_jsonl

    tokenizer = load_tokenizer(cfg)
    template = get_chat_template_from_config(cfg=cfg, tokenizer=tokenizer)
    limit = int(cfg.get("sequence_len") or 0)
    rows = read_rows(src)
    keep, longest, over = [], 0, 0
    for row in rows:
        convs = [row["messages"]] if mode == "sft" else [row["chosen"], row["rejected"]]
        length = max(_row_length(tokenizer, template, c) for c in convs)
        longest = max(longest, length)
        if limit and length > limit:
            over += 1
        else:
            keep.append(row)
    if over and cfg.get("sealong_on_long", "error") != "drop":
        raise ValueError(
            f"{over} of {len(rows)} labeled rows are longer than sequence_len "
            f"{limit} (longest: {longest} tokens); Axolotl would drop them with only "
            "a warning. Raise sequence_len, lower sealong_max_new_tokens, or set "
            "sealong_on_long: drop. Samples are cached, so a rerun samples nothing."
        )
    if over:
        LOG.warning(
            "sealong: dropped %d of %d rows over sequence_len %d",
            over,
            len(rows),
            limit,
        )
    if not keep:
        raise ValueError(
            f"no labeled {mode} rows to train on ({len(rows)} made, {over} too long): "
            f"see {src.parent / DIAGNOSTICS_FILE}"
        )
    write_jsonl(dst, keep)  # atomic: a reader never sees half a file
    return {
        "rows": len(rows),
        "kept": len(keep),
        "over_sequence_len": over,
        "longest_tokens": longest,
    }


def label_shards(
    label_cfg: LabelConfig,
    rows: list[dict[str, Any]],
    keys: list[str],
    out: Path,
    info: RankInfo,
) -> None:
    """hf under a multi-rank launch: every rank samples its shard, rank 0 merges.

    ``keys`` are the questions' keys in order (after ``max_questions``); the
    merged files in ``out`` equal a single-process run's. Returns on every rank
    once ``out`` is complete (``distributed.label_on_ranks``).
    """
    from functools import partial

    from axolotl_sealong.core.pipeline import label
    from axolotl_sealong.integrations.axolotl.distributed import (
        label_on_ranks,
        merge_label_dirs,
        rank_settings,
        shard,
    )

    rows = rows[: len(keys)]  # max_questions caps the whole run, not each shard

    def run(info: RankInfo, part: Path) -> None:
        mine = shard(rows, info)
        LOG.info(
            "sealong: rank %d of %d self-labeling its shard, %d of %d question(s), "
            "into %s",
            info.rank,
            info.world_size,
            len(mine),
            len(rows),
            part,
        )
        label(rank_settings(label_cfg, info), mine, part, allow_empty=True)

    merge = partial(merge_label_dirs, order=keys)
    label_on_ranks(out, run, merge=merge, info=info)


def _release_cuda_cache() -> None:
    """Hand what labeling cached on the GPU (hf engine, embedder) back to the
    trainer; a CUDA context that labeling never made is not made here."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def labels_key(label_cfg: LabelConfig, question_keys: list[str]) -> str:
    """The labels folder's name: the settings (no secret), the weights, the data.

    The sample cache has its own, narrower key (``pipeline.sample_key_parts``);
    this one covers every setting but the runtime ones (``RUNTIME_FIELDS``:
    parallel plan, ports, timeouts, which the sample cache ignores too), since
    scoring and selection settings change the rows too. Secrets
    (``openai_api_key``) are never part of it. With the
    openai engine and ``openai_model`` unset, the name the server serves is not
    part of it either (training must not need the labeling server): a reused
    folder is checked against it instead (``check_reused_labels``).
    """
    from axolotl_sealong.core.cache import (
        model_fingerprint,
        path_fingerprint,
        stable_hash,
    )
    from axolotl_sealong.core.config import RUNTIME_FIELDS

    return stable_hash(
        [
            label_cfg.hashable_settings(exclude=RUNTIME_FIELDS),
            model_fingerprint(label_cfg.model, label_cfg.model_revision),
            path_fingerprint(label_cfg.adapter),
            question_keys,
        ]
    )


def check_reused_labels(label_cfg: LabelConfig, diagnostics: dict[str, Any]) -> None:
    """Labels sampled from a server's one model must still be that model's.

    With ``sampler: openai`` and ``openai_model`` unset, the folder records the
    served name it was sampled from. If the server now serves another name
    (round 2's weights), reusing the rows would train on round 1's labels: stop
    and say how to label afresh. An unreachable server (stopped after
    labeling, to free the GPU for training) is not an error.
    """
    recorded = diagnostics.get("served_model")
    if label_cfg.sampler != "openai" or label_cfg.openai_model or not recorded:
        return
    from axolotl_sealong.core.pipeline import served_model

    try:
        current = served_model(label_cfg)
    except (ConnectionError, ValueError) as err:
        LOG.info(
            "sealong: cannot ask the server which model it serves (%s); reusing "
            "rows sampled from %r",
            err,
            recorded,
        )
        return
    if current != recorded:
        raise ValueError(
            f"these labeled rows were sampled from served model {recorded!r}, but "
            f"the server now serves {current!r}: set sealong_openai_model: "
            f"{current} to label with it (a new labels folder), or serve "
            f"{recorded!r} again"
        )


def labels_dir(cfg: Any, label_cfg: LabelConfig, question_keys: list[str]) -> Path:
    """The labels folder: ``labels_key``'s name under ``sealong_output_dir``
    (default ``<dataset_prepared_path or last_run_prepared>/sealong``)."""
    root = Path(
        cfg.get("sealong_output_dir")
        or Path(cfg.get("dataset_prepared_path") or "last_run_prepared") / "sealong"
    )
    return root / labels_key(label_cfg, question_keys)


def load_self_labeled(cfg: Any) -> Any:
    """Label (or reuse), fit to sequence_len, then build Axolotl's dataset meta.

    One process, or a multi-rank launch with the vllm or openai engine: the
    first rank to take the folder's lock labels, the others then reuse its rows.
    A multi-rank launch with the hf engine shards the questions over the ranks
    (``label_shards``). Either way exactly one rank writes the training file.
    """
    from filelock import FileLock

    from axolotl_sealong.core.diagnostics import format_table
    from axolotl_sealong.core.pipeline import (
        DIAGNOSTICS_FILE,
        label,
        questions_from_rows,
    )
    from axolotl_sealong.integrations.axolotl.distributed import (
        rank_info,
        sampling_role,
    )
    from axolotl_sealong.sampling.factory import resolve_engine

    mode = training_mode(cfg)
    label_cfg = label_settings(cfg)
    rows = _read_questions(cfg)
    questions = questions_from_rows(rows, label_cfg)
    out = labels_dir(cfg, label_cfg, [q.key for q in questions])
    out.parent.mkdir(parents=True, exist_ok=True)
    info = rank_info()
    sharded = (
        info.world_size > 1
        and sampling_role(resolve_engine(label_cfg.sampler), info) == "shard"
    )
    if sharded and not (out / DIAGNOSTICS_FILE).exists():
        # Rank 0 writes diagnostics.json last, only once every shard is in:
        # if a rank sees it, the merged rows are complete.
        label_shards(label_cfg, rows, [q.key for q in questions], out, info)
        _release_cuda_cache()
        sharded_here = True
    else:
        sharded_here = False
    # Every rank takes the lock; the first labels (or, after label_shards,
    # writes the training file), the others find it done.
    with FileLock(str(out) + ".lock"):
        if sharded_here:
            LOG.info(
                "sealong: merged labeled rows of %d ranks in %s", info.world_size, out
            )
        elif (out / DIAGNOSTICS_FILE).exists():
            check_reused_labels(
                label_cfg, json.loads((out / DIAGNOSTICS_FILE).read_text())
            )
            LOG.info(
                "sealong: reusing labeled rows in %s (settings hash %s)", out, out.name
            )
        else:
            LOG.info(
                "sealong: self-labeling %d question(s) into %s", len(questions), out
            )
            label(label_cfg, rows, out)
            _release_cuda_cache()
        diag = json.loads((out / DIAGNOSTICS_FILE).read_text())
        LOG.info("sealong: counts %s", diag["counts"])
        LOG.info("sealong:\n%s", format_table(diag["subem"]))
        seq = cfg.get("sequence_len")
        train_file = out / f"train_{mode}_seq{seq}_{cfg.get('sealong_on_long')}.jsonl"
        if not train_file.exists():
            stats = fit_rows(cfg, out / ROW_FILE[mode], train_file, mode)
            LOG.info("sealong: %s rows for training: %s", mode, stats)

    from axolotl.utils.dict import DictDefault

    entry = DictDefault(
        {
            "path": str(train_file),
            "ds_type": "json",
            "split": "train",
            "type": ROW_TYPE[mode],
        }
    )
    labeled = self_label_entries(cfg)
    others = [ds for ds in cfg["datasets"] if ds not in labeled]
    cfg["datasets"] = [entry, *others]
    if mode == "sft":
        from axolotl.common.datasets import load_datasets

        return load_datasets(cfg=cfg)
    from axolotl.common.datasets import load_preference_datasets

    return load_preference_datasets(cfg=cfg)
