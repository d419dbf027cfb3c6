"""End-to-end and model-loading tests: every test in this folder is ``slow``.

``pytest -m "not slow"`` is the fast tier (no model or embedder loads, no
Axolotl, lm-eval or vLLM pipeline); ``pytest`` runs both. A test belongs here
when it loads a model or an embedder (tiny ones included) or runs a pipeline
end to end, in process or as a subprocess; ``tests/test_structure.py`` checks
that the ``slow`` mark is used nowhere else. The folder is a package, so a
module here may share its name with the fast half it extends (``slow.test_cli``
uses ``test_cli``'s helpers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# fixtures the two halves of a test module share
from test_eval_cli import hf_run  # noqa: F401
from test_eval_discovery import wheel  # noqa: F401
from test_mbr import toy_registered  # noqa: F401

HERE = Path(__file__).resolve().parent


@pytest.fixture
def trust_remote_code_seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ``SentenceTransformer`` made from now on (the real class,
    subclassed) appends its ``trust_remote_code`` keyword (None if not given)
    to the list returned."""
    import sentence_transformers

    seen: list[Any] = []
    real = sentence_transformers.SentenceTransformer

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.append(kwargs.get("trust_remote_code"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Recording)
    return seen


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slow)
