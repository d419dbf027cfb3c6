"""`sealong` as users call it (in-process through main(), and one real subprocess)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from builders import (
    question_rows,
    write_jsonl,
)

from axolotl_sealong.cli.main import main
from axolotl_sealong.core.config import LabelConfig


def test_help_documents_every_command_and_setting(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    top = capsys.readouterr().out
    for cmd in ("label", "bench"):
        assert cmd in top
    with pytest.raises(SystemExit):
        main(["label", "--help"])
    text = capsys.readouterr().out
    for name in LabelConfig.model_fields:
        assert "--" + name.replace("_", "-") in text


def _data(tmp_path):
    # answers as a plain string, as users may write them
    rows = question_rows(
        2, context="Passage 1:\nKel{i} is the capital of Zorvan{i}.", answers="Kel{i}"
    )
    return write_jsonl(tmp_path / "q.jsonl", rows)


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--num-samples", "1"], "num_samples .*--num-samples.*>= 2"),
        (["--top-p", "0"], r"top_p .*\(0, 1\]"),
    ],
)
def test_bad_flags_give_one_clear_line(tmp_path, capsys, flags, match):
    code = main(
        ["label", "--data", str(_data(tmp_path)), "--out", str(tmp_path), *flags]
    )
    assert code == 2
    import re

    assert re.search(match, capsys.readouterr().err)


def test_missing_data_is_explained(tmp_path, capsys):
    assert main(["label", "--out", str(tmp_path)]) == 2
    assert "--data PATH" in capsys.readouterr().err


SCRIPT = Path(sys.executable).parent / "sealong"


@pytest.mark.skipif(
    not SCRIPT.exists() and shutil.which("sealong") is None,
    reason="console script not installed (run scripts/setup.sh)",
)
def test_console_script_runs():
    script = str(SCRIPT) if SCRIPT.exists() else "sealong"
    out = subprocess.run(
        [script, "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("label", "data", "recipes", "eval", "bench"):
        assert command in out


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "axolotl_sealong.cli.main", "bench", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "mbr" in out.stdout
