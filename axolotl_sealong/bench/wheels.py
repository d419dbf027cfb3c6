"""The wheels the bare GPU image lacks: packed small enough to travel, installed there.

What travels to the GPU machine (the checkout plus named ignored paths) must
stay under 64 MiB, and a wheel's own zip compression is weak on native
libraries (pyarrow's wheel alone is 43 MB). ``pack`` rewrites every wheel
uncompressed (ZIP_STORED: the same files, byte for byte) and puts them in one
xz tarball, which compresses across files. Two wheels lose native payloads
that a bf16 LoRA run never loads (``TRIM``; their RECORD is rewritten to
match): bitsandbytes keeps its CUDA 13.0 and CPU libraries of sixteen, and
wandb its Python code without its service binaries (``wandb.init`` would
fail loudly); untrimmed, the tarball was 74.2 MiB (2026-12-06). ``install``
unpacks the tarball and installs the wheels the running Python does not
already have, with ``pip install --no-deps --no-index --target`` (or,
without pip, by unzipping them, which is what pip does for these wheels),
into a folder for ``PYTHONPATH``: the image's own torch, transformers,
accelerate and peft stay the ones used. Standard library only: it runs
before anything is installed.

    python -m axolotl_sealong.bench.wheels pack WHEEL_DIR ARCHIVE
    python -m axolotl_sealong.bench.wheels install ARCHIVE TARGET
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
INSTALLED = "SEALONG_INSTALLED.json"
# distribution name -> (what to drop, why); see the module docstring
TRIM: dict[str, tuple[str, str]] = {
    "bitsandbytes": (
        r"bitsandbytes/libbitsandbytes_(?!cuda130\.so$|cpu\.so$)[^/]+\.so$",
        "native libraries other than CUDA 13.0 (the GPU image's torch) and CPU",
    ),
    "wandb": (
        r"wandb/bin/.+",
        "the wandb-core/wandb-symon service binaries (only wandb.init runs them)",
    ),
}


def dist_name(wheel: str) -> str:
    """``Foo_Bar-1.0-py3-none-any.whl`` -> ``foo-bar`` (PEP 503 normalised)."""
    return re.sub(r"[-_.]+", "-", Path(wheel).name.split("-")[0]).lower()


def restore_wheel(src: Path, dst: Path, drop: str | None = None) -> list[str]:
    """``src`` rewritten uncompressed into ``dst``, less files matching ``drop``.

    Returns the dropped names; RECORD is rewritten without them.
    """
    pattern = re.compile(drop) if drop else None
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        infos = zin.infolist()
        record = next(
            (i for i in infos if i.filename.endswith(".dist-info/RECORD")), None
        )
        dropped = [
            i.filename for i in infos if pattern and pattern.fullmatch(i.filename)
        ]
        skip = set(dropped)
        for info in infos:
            if info.filename in skip:
                continue
            data = zin.read(info)
            if info is record and skip:
                rows = csv.reader(io.StringIO(data.decode()))
                kept = [r for r in rows if r and r[0] not in skip]
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(kept)
                data = buf.getvalue().encode()
            info.compress_type = zipfile.ZIP_STORED
            zout.writestr(info, data)
    return dropped


def pack(wheel_dir: Path, archive: Path) -> dict[str, Any]:
    """Every ``*.whl`` of ``wheel_dir`` into one xz tarball, with a manifest."""
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise ValueError(f"no wheels in {wheel_dir}")
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for wheel in wheels:
            rule = TRIM.get(dist_name(wheel.name))
            out = Path(tmp) / wheel.name
            dropped = restore_wheel(wheel, out, rule[0] if rule else None)
            entry: dict[str, Any] = {
                "wheel": wheel.name,
                "bytes": wheel.stat().st_size,
                "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            }
            if dropped:
                entry["trimmed"] = {
                    "why": rule[1] if rule else "",
                    "files_dropped": len(dropped),
                    "bytes_after": out.stat().st_size,
                }
            entries.append(entry)
        manifest = {"wheels": entries, "total_bytes": sum(e["bytes"] for e in entries)}
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(archive.name + ".partial")
        with tarfile.open(partial, "w:xz", preset=9) as tar:
            for name in [MANIFEST, *(w.name for w in wheels)]:
                tar.add(Path(tmp) / name, arcname=name)
        partial.replace(archive)
    manifest["archive_bytes"] = archive.stat().st_size
    return manifest


def installed_version(dist: str) -> str | None:
    """``dist``'s installed version, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _unzip(wheel: Path, target: Path) -> None:
    """What pip does with these wheels: files to ``target``, ``.data`` lib
    folders merged in (scripts, headers and data are not needed here)."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            parts = info.filename.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            dest = target.joinpath(*parts)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(info))


def _has_pip() -> bool:
    import importlib.util

    return importlib.util.find_spec("pip") is not None


def install(archive: Path, target: Path) -> dict[str, Any]:
    """Install the archive's wheels this Python lacks into ``target``.

    A ``target`` already made from the same archive is reused. Returns what
    was installed and skipped (also written to ``target/SEALONG_INSTALLED.json``).
    """
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    marker = target / INSTALLED
    if marker.exists():
        done = json.loads(marker.read_text())
        if done.get("archive_sha256") == digest:
            return dict(done, reused=True)
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(tmp, filter="data")
        manifest = json.loads((Path(tmp) / MANIFEST).read_text())
        wheels = sorted(Path(tmp).glob("*.whl"))
        todo, present = [], {}
        for wheel in wheels:
            have = installed_version(dist_name(wheel.name))
            if have is None:
                todo.append(wheel)
            else:
                present[wheel.name] = have
        target.mkdir(parents=True, exist_ok=True)
        how = "pip" if _has_pip() else "unzip (no pip here)"
        if todo and how == "pip":
            # one pip call: wheels that share a top folder (axolotl and
            # axolotl-contribs-lgpl) are merged, not replaced
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                 "--no-compile", "--disable-pip-version-check", "--quiet",
                 "--target", str(target), *map(str, todo)],
                check=True,
            )  # fmt: skip
        elif todo:
            for wheel in todo:
                _unzip(wheel, target)
    result = {
        "archive": str(archive),
        "archive_sha256": digest,
        "archive_bytes": archive.stat().st_size,
        "wheels_bytes": manifest["total_bytes"],
        "installed_with": how,
        "installed": [w.name for w in todo],
        "already_here": present,
        "trimmed": {
            e["wheel"]: e["trimmed"]["why"]
            for e in manifest["wheels"]
            if "trimmed" in e
        },
    }
    marker.write_text(json.dumps(result, indent=2) + "\n")
    return dict(result, reused=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m axolotl_sealong.bench.wheels",
        description=(__doc__ or "").split("\n")[0],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="wheels -> one xz tarball (prints the sizes)")
    p.add_argument("wheel_dir", type=Path)
    p.add_argument("archive", type=Path)
    i = sub.add_parser("install", help="tarball -> a folder for PYTHONPATH")
    i.add_argument("archive", type=Path)
    i.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.wheel_dir, args.archive)
        for e in manifest["wheels"]:
            note = ""
            if "trimmed" in e:
                t = e["trimmed"]
                note = f"  (trimmed: {t['files_dropped']} files, {t['why']})"
            print(f"{e['bytes'] / 1e6:9.2f} MB  {e['wheel']}{note}")
        print(f"{manifest['total_bytes'] / 1e6:9.2f} MB  wheels as downloaded")
        print(
            f"{manifest['archive_bytes'] / 1e6:9.2f} MB  {args.archive} "
            f"({manifest['archive_bytes'] / 2**20:.2f} MiB: what travels)"
        )
        return 0
    result = install(args.archive, args.target)
    print(json.dumps(result), file=sys.stderr)
    print(args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
