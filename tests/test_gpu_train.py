"""The GPU check's training stage (gpu_train.py) and what it needs to travel.

The slow test runs ``scripts/gpu_check.sh --dry-run`` end to end on the CPU: the
hf part builds the tiny random model, the training stage fills the sample cache
with its scripted sampler and runs a real ``axolotl train`` (our plugin, our
ORPO trainer, the probe plugin) on it. The others check the pieces: the
scripted samples, the summary of a probe file, the wheel packing and install,
and numba's stand-in.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import tarfile
import zipfile
from pathlib import Path

import pytest

from axolotl_sealong.bench import gpu_train, wheels

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from axolotl_sealong.bench.tiny import build_tiny_tokenizer

    folder = build_tiny_tokenizer(tmp_path_factory.mktemp("tok"), 1_000_000)
    return AutoTokenizer.from_pretrained(folder)


def test_scripted_samples_have_a_consensus_and_the_asked_length(tokenizer):
    from axolotl_sealong.core.metrics import extract_final_answer
    from axolotl_sealong.sampling.base import SampleRequest, SamplingParams

    sampler = gpu_train.ScriptedSampler(tokenizer, 4096, response_tokens=200)
    params = SamplingParams(4, 0.7, 1.0, 216, 0)
    requests = [SampleRequest("a", "q", 1), SampleRequest("b", "q", 2)]
    out = list(sampler.sample(requests, params))
    assert [r.key for r, _ in out] == ["a", "b"]
    for _, texts in out:
        assert len(texts) == 4 and len(set(texts)) == 4
        answers = [extract_final_answer(t).rstrip(".") for t in texts]
        assert answers == [gpu_train.ANSWER] * 3 + [gpu_train.OTHER]
        for text in texts:
            tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            assert 190 <= tokens <= 205
    again = list(sampler.sample(requests, params))
    assert [t for _, t in again] == [t for _, t in out]  # seeded by the request


def test_summary_times_steps_after_the_first_and_finds_an_oom():
    probe = {
        "steps": [
            {"step": 1, "seconds": 9.0, "peak_gib": 40.0},
            {"step": 2, "seconds": 3.0, "peak_gib": 41.0},
            {"step": 3, "seconds": 5.0, "peak_gib": 41.5},
        ],
        "peak_gib": 41.5,
        "rows": [{"prompt": 10, "chosen": 30, "rejected": 31}],
    }
    got = gpu_train.summarize(probe)
    assert got["seconds_per_step"] == 4.0 and got["step_seconds"] == [9.0, 3.0, 5.0]
    assert got["peak_gib"] == 41.5 and got["tokens_per_row_max"] == 31
    one = gpu_train.summarize({"steps": [{"step": 1, "seconds": 2.5}]})
    assert one["seconds_per_step"] == 2.5 and one["seconds_per_step_from"] == "step 1"
    assert gpu_train.summarize({})["seconds_per_step"] is None
    log = "x\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n"
    assert gpu_train._out_of_memory(log).startswith("torch.OutOfMemoryError")
    assert gpu_train._out_of_memory("Traceback\nValueError: no\n") is None


def _record_hash(data: bytes) -> str:
    """A RECORD row's hash, as pip writes it (PEP 376)."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _wheel(folder: Path, dist: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel with a RECORD listing its files."""
    info = f"{dist}-1.0.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n"
    wheel = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files = {
        **files,
        f"{info}/METADATA": meta.encode(),
        f"{info}/WHEEL": wheel.encode(),
    }
    lines = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*lines, f"{info}/RECORD,,"]) + "\n").encode()
    path = folder / f"{dist}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_trim_rules_keep_what_the_gpu_image_loads():
    import re

    keep, _ = wheels.TRIM["bitsandbytes"]
    dropped = [
        n
        for n in (
            "bitsandbytes/libbitsandbytes_cuda130.so",
            "bitsandbytes/libbitsandbytes_cpu.so",
            "bitsandbytes/libbitsandbytes_cuda128.so",
            "bitsandbytes/libbitsandbytes_cuda132.so",
            "bitsandbytes/libbitsandbytes_rocm64.so",
            "bitsandbytes/functional.py",
        )
        if re.fullmatch(keep, n)
    ]
    assert dropped == [
        "bitsandbytes/libbitsandbytes_cuda128.so",
        "bitsandbytes/libbitsandbytes_cuda132.so",
        "bitsandbytes/libbitsandbytes_rocm64.so",
    ]
    service, _ = wheels.TRIM["wandb"]
    assert re.fullmatch(service, "wandb/bin/wandb-core")
    assert not re.fullmatch(service, "wandb/sdk/wandb_run.py")


def test_wheels_pack_trims_and_install_skips_what_is_here(tmp_path, monkeypatch):
    src = tmp_path / "wheels"
    src.mkdir()
    big = b"\0" * 200_000
    _wheel(src, "sealong_fake_pkg", {"sealong_fake_pkg/__init__.py": b"X = 1\n"})
    monkeypatch.setitem(
        wheels.TRIM, "sealong-fake-native", (r"native/lib_(?!keep).+\.so", "test")
    )
    native = _wheel(
        src,
        "sealong_fake_native",
        {
            "native/__init__.py": b"",
            "native/lib_keep.so": b"keep",
            "native/lib_cuda128.so": big,
            "native/lib_rocm64.so": big,
        },
    )
    _wheel(src, "numpy", {"numpy/__init__.py": b""})  # the image has numpy
    archive = tmp_path / "out" / "gpu_wheels.tar.xz"
    manifest = wheels.pack(src, archive)
    assert {e["wheel"] for e in manifest["wheels"]} == {p.name for p in src.iterdir()}
    (trimmed,) = [e for e in manifest["wheels"] if "trimmed" in e]
    assert trimmed["wheel"] == native.name
    assert trimmed["trimmed"]["files_dropped"] == 2
    assert trimmed["sha256"] == hashlib.sha256(native.read_bytes()).hexdigest()
    assert archive.stat().st_size < 100_000  # xz over stored files
    with tarfile.open(archive) as tar:
        stored = zipfile.ZipFile(tar.extractfile(native.name))  # type: ignore[arg-type]
        names = stored.namelist()
        assert "native/lib_cuda128.so" not in names and "native/lib_keep.so" in names
        record = stored.read("sealong_fake_native-1.0.dist-info/RECORD").decode()
        assert "cuda128" not in record and "lib_keep" in record
        assert {i.compress_type for i in stored.infolist()} == {zipfile.ZIP_STORED}

    target = tmp_path / "site"
    result = wheels.install(archive, target)
    assert sorted(result["installed"]) == sorted(
        p.name for p in src.iterdir() if not p.name.startswith("numpy")
    )
    assert "numpy-1.0-py3-none-any.whl" in result["already_here"]
    assert (target / "sealong_fake_pkg" / "__init__.py").read_text() == "X = 1\n"
    assert not (target / "numpy").exists()
    assert (target / "native" / "lib_keep.so").read_bytes() == b"keep"
    assert not (target / "native" / "lib_cuda128.so").exists()
    assert wheels.install(archive, target)["reused"] is True
    # without pip: the wheels are unzipped, to the same files
    monkeypatch.setattr(wheels, "_has_pip", lambda: False)
    other = tmp_path / "site_unzip"
    assert wheels.install(archive, other)["installed_with"].startswith("unzip")
    assert (other / "sealong_fake_pkg" / "__init__.py").read_text() == "X = 1\n"
    assert (other / "sealong_fake_native-1.0.dist-info" / "RECORD").exists()
    assert (other / "native" / "lib_keep.so").read_bytes() == b"keep"


def test_numba_stand_in_refuses_every_call():
    spec = importlib.util.spec_from_file_location(
        "numba_standin", ROOT / "scripts" / "gpu_standins" / "numba" / "__init__.py"
    )
    assert spec and spec.loader
    numba = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(numba)

    @numba.njit
    def bare(x):
        return x

    @numba.njit(cache=True)
    def called(x):
        return x

    for fn in (bare, called):
        with pytest.raises(RuntimeError, match="needs numba"):
            fn(1)
    assert numba.SEALONG_STANDIN is True
