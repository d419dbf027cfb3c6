"""The README is a short front door and every relative link in it and docs/ works.

Links are checked to the file and, for Markdown targets, to the heading anchor
(GitHub's slugs). docs/settings.md must equal what its generator writes now.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from builders import H100_NODE, ROOT, validate

README = ROOT / "README.md"
GENERATOR = ROOT / "scripts" / "gen_settings_doc.py"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:


def _prose(text: str) -> str:
    """Markdown without code: a link inside a code block or span is not a link."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, punctuation dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, numbered as GitHub numbers repeats."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    """Relative link targets of a Markdown file, in order (external ones left out)."""
    return [
        t for t in _LINK.findall(_prose(path.read_text())) if not _EXTERNAL.match(t)
    ]


def broken_links(path: Path) -> list[str]:
    """``file: target (why)`` for each relative link of ``path`` that fails."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{path.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{path.name}: {target} (no heading #{anchor})")
    return broken


def doc_pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_in_readme_and_docs_resolves() -> None:
    pages = doc_pages()
    assert len(pages) > 5
    broken = [b for page in pages for b in broken_links(page)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_finds_a_missing_file_and_a_missing_anchor(
    tmp_path: Path,
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "there.md").write_text(
        "# Title\n\n## Rounds: `sealong iterate`\n\n## Title\n"
    )
    (tmp_path / "fig.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](sub/there.md) [ok anchor](sub/there.md#rounds-sealong-iterate)\n"
        "[repeat](sub/there.md#title-1) ![figure](fig.png) [here](#page)\n"
        "[web](https://example.com/missing.md) `[code](nope.md)`\n"
        "```\n[fenced](nope.md)\n```\n"
        "[gone](sub/missing.md) ![gone figure](missing.png)\n"
        "[bad anchor](sub/there.md#rounds) [bad here](#nowhere)\n"
    )
    assert broken_links(page) == [
        "page.md: sub/missing.md (no such file)",
        "page.md: missing.png (no such file)",
        "page.md: sub/there.md#rounds (no heading #rounds)",
        "page.md: #nowhere (no heading #nowhere)",
    ]


def test_github_slugs() -> None:
    assert slug("Rounds: `sealong iterate`") == "rounds-sealong-iterate"
    assert slug("Every `sealong_*` key") == "every-sealong_-key"
    assert (
        slug("Protocol 2: one round (2026-11-24)") == "protocol-2-one-round-2026-11-24"
    )
    assert slug("GPU set-up") == "gpu-set-up"


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    """A page no link leads to is a page nobody finds."""
    reached, todo = {README}, [README]
    while todo:
        page = todo.pop()
        for target in relative_links(page):
            dest = (page.parent / target.partition("#")[0]).resolve()
            if dest.suffix == ".md" and dest.is_file() and dest not in reached:
                reached.add(dest)
                todo.append(dest)
    orphans = [str(p.relative_to(ROOT)) for p in doc_pages() if p not in reached]
    assert not orphans, f"not linked from README (directly or via docs): {orphans}"


def test_readme_is_a_short_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 300
    # CI (.ci/run) runs the README's test command: it must stay in the README
    assert "bash scripts/test.sh" in text
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_settings_page_is_generated_from_the_config() -> None:
    spec = importlib.util.spec_from_file_location("gen_settings_doc", GENERATOR)
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    page = ROOT / "docs" / "settings.md"
    assert page.read_text() == generator.render(), (
        "docs/settings.md is out of date: run python scripts/gen_settings_doc.py"
    )
    # every key of the plugin's settings model is on the page
    from axolotl_sealong.integrations.axolotl.args import SeaLongArgs

    for key in SeaLongArgs.model_fields:
        assert f"| `{key}` |" in page.read_text()


def test_the_readme_recipe_validates_with_the_plugin(monkeypatch, gpu_packages) -> None:
    """The YAML a newcomer pastes passes Axolotl's schema on a GPU node (with
    the [gpu] extra's packages there: ``gpu_packages``)."""
    import yaml
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.dict import DictDefault

    (block, *_) = re.findall(r"^```yaml\n(.*?)^```", README.read_text(), re.M | re.S)
    raw = yaml.safe_load(block)
    cfg = DictDefault(raw)
    prepare_plugins(cfg)
    out = validate(cfg, H100_NODE | {"n_gpu": 1})  # one H100 of the node
    for key, value in raw.items():
        if key.startswith("sealong_"):
            assert out[key] == value, key
    assert out["datasets"][0]["type"] == "axolotl_sealong.self_label"
    assert out["rl"] == "orpo"
