"""The package's shape: no import circle, and each subpackage imports only downward.

The graph is built from the source (AST), not by importing: an edge for every
``import`` and ``from ... import`` of an ``axolotl_sealong`` module, at module
level and inside functions alike (a lazy import delays a circle, it does not
remove it), with relative imports resolved and ``from pkg import mod`` read as
an import of ``pkg.mod``. Importing ``a.b.c`` also runs ``a/b/__init__``, so
the parent packages of a target are edges too, except those the importer sits in
(already being imported). The whole graph must be acyclic. The layer rules:

- The layers, bottom up: ``common`` (model resolution, row files) imports
  nothing of the package; ``sampling`` and ``embedding`` import only
  ``common`` (and not each other); ``core`` imports those three, nothing of
  ``data``; ``data`` nothing above ``core``; ``integrations`` nothing from
  ``iterate``, ``cli``, ``demo`` or ``bench``; ``iterate`` (``sealong
  iterate``) nothing from ``cli``, ``demo`` or ``bench``; ``demo`` (which runs
  iterate's rounds) and ``bench`` nothing from ``cli``. Every subpackage has
  a rule (``cli``, the top, may import anything).
- The engines import from ``sampling`` only the interface (``base``), the
  engine registry (``registry``), the vLLM options (``options``), the server
  settings (``server_args``), the GPU environment (``cuda_env``), the
  parallel plan (``parallel``) and their own parts (``hf_kernels`` and
  ``hf_cpu`` of ``hf``; ``server_env``, ``server_command`` and
  ``server_process`` of ``server``); ``server`` also uses the ``openai``
  engine (it serves through it). A part imports the interface and its
  engine's other parts. No engine imports ``factory``; the interface modules
  import no other ``sampling`` module.
- Importing ``sampling.factory`` (which imports every built-in engine, to
  register it) loads none of torch, transformers, vLLM or httpx.
- ``common`` and ``core`` import no torch, transformers, axolotl, vLLM, TRL,
  peft, sentence-transformers or lm-eval at module level: read from the source,
  and checked by importing each of their modules in a fresh interpreter.
- The labeling pipeline's file names (``core.pipeline.SFT_FILE``, ...) are
  written once: no other module spells ``scored.jsonl`` and the like as a
  string of code (prose in docstrings and comments may name them).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import ROOT, subprocess_env

PACKAGE = "axolotl_sealong"
TOP = {"integrations", "iterate", "cli", "demo", "bench"}
FORBIDDEN = {
    "common": {"core", "sampling", "embedding", "data", *TOP},
    "sampling": {"core", "embedding", "data", *TOP},
    "embedding": {"core", "sampling", "data", *TOP},
    "core": {"data", *TOP},
    "data": TOP,
    "integrations": {"iterate", "cli", "demo", "bench"},
    "iterate": {"cli", "demo", "bench"},
    "demo": {"cli"},
    "bench": {"cli"},
}
# The pipeline's output files (core/pipeline.py names them once).
PIPELINE = f"{PACKAGE}.core.pipeline"
FILE_CONSTANTS = ("SFT_FILE", "PREFERENCE_FILE", "SCORED_FILE", "DIAGNOSTICS_FILE")
ENGINES = ("hf", "vllm", "openai", "server")
# what every engine may import of sampling; these import no other sampling module
ENGINE_MAY_IMPORT = {
    "base",
    "registry",
    "options",
    "server_args",
    "cuda_env",
    "parallel",
}
# an engine split along its seams: the parts only it (and its other parts) use
ENGINE_PARTS = {
    "hf": {"hf_kernels", "hf_cpu"},
    "server": {"server_env", "server_command", "server_process"},
}
# vllm_server = a managed `vllm serve` sampled through the openai engine.
ENGINE_EXTRA = {"server": {"openai"}}
HEAVY = ("torch", "transformers", "axolotl", "vllm", "trl", "peft")
HEAVY_STATIC = (*HEAVY, "sentence_transformers", "lm_eval")
# what an engine module may not load when it is imported (it registers then)
ENGINE_HEAVY = (*HEAVY_STATIC, "httpx")


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``: dotted name -> file."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, top_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import nodes; ``top_only``: only those that run on import (not in a
    function, not under ``if TYPE_CHECKING``)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        for child in ast.iter_child_nodes(node):
            if top_only and isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            ):
                continue
            if top_only and isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imported_names(
    module: str, path: Path, modules: set[str], top_only: bool = False
) -> set[str]:
    """Absolute names ``module`` imports (any package, not only ours)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path)), top_only):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor if is_pkg else anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            out.add(sub if sub in modules else base)
    return out


def import_graph(root: Path, package: str, top_only: bool = False) -> dict[str, set]:
    """Edges between ``package``'s own modules, parent packages included."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own_parents = {".".join(name.split(".")[:i]) for i in range(1, len(name))}
        edges = set()
        for target in imported_names(name, path, set(modules), top_only):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dotted = ".".join(parts[:i])
                if dotted in modules and dotted not in own_parents and dotted != name:
                    edges.add(dotted)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        layer = module.split(".")[1] if "." in module else None
        for target in sorted(targets):
            to = target.split(".")[1] if "." in target else None
            if to in FORBIDDEN.get(layer or "", ()):
                bad.append(f"{module} -> {target}")
    return bad


def engine_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    sampling = f"{PACKAGE}.sampling"
    for module, targets in sorted(graph.items()):
        if not module.startswith(sampling + "."):
            continue
        own = module.removeprefix(sampling + ".")
        part_of = next((e for e, parts in ENGINE_PARTS.items() if own in parts), None)
        allowed = (
            ENGINE_MAY_IMPORT
            | ENGINE_PARTS.get(own, set())
            | ENGINE_EXTRA.get(own, set())
            if own in ENGINES
            else ENGINE_MAY_IMPORT | ENGINE_PARTS[part_of]
            if part_of is not None
            else set()
            if own in ENGINE_MAY_IMPORT
            else None
        )
        if allowed is None:
            continue
        for target in sorted(targets):
            if target.startswith(sampling + "."):
                if target.removeprefix(sampling + ".") not in allowed:
                    bad.append(f"{module} -> {target}")
    return bad


def heavy_imports(
    root: Path, package: str, sub: str, heavy: tuple[str, ...] = HEAVY_STATIC
) -> list[str]:
    modules = module_names(root, package)
    bad = []
    for name, path in modules.items():
        if not name.startswith(f"{package}.{sub}"):
            continue
        for target in imported_names(name, path, set(modules), top_only=True):
            if target.split(".")[0] in heavy:
                bad.append(f"{name} imports {target} at module level")
    return bad


# -- the checks on the package ------------------------------------------------


def test_no_import_circle():
    cycle = find_cycle(import_graph(ROOT, PACKAGE))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_subpackages_import_only_downward():
    subpackages = {p.parent.name for p in (ROOT / PACKAGE).glob("*/__init__.py")}
    assert set(FORBIDDEN) | {"cli"} == subpackages  # a new subpackage needs a rule
    assert layer_violations(import_graph(ROOT, PACKAGE)) == []


def pipeline_file_names(root: Path, package: str) -> set[str]:
    """The values of the pipeline's file-name constants, read from its source."""
    tree = ast.parse(
        module_names(root, package)[f"{package}.core.pipeline"].read_text()
    )
    return {
        node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and any(
            isinstance(t, ast.Name) and t.id in FILE_CONSTANTS for t in node.targets
        )
    }


def file_name_literals(root: Path, package: str) -> list[str]:
    """``module: 'text'`` for each string of code outside the pipeline that spells
    one of its file names (alone, or ending a path or a glob); docstrings are
    prose and left out."""
    names = pipeline_file_names(root, package)
    bad = []
    for module, path in module_names(root, package).items():
        if module == f"{package}.core.pipeline":
            continue
        tree = ast.parse(path.read_text())
        docs = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(
                node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            )
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and any(
                    node.value == n or node.value.endswith(("/" + n, "*" + n))
                    for n in names
                )
            ):
                bad.append(f"{module}: {node.value!r}")
    return bad


def test_pipeline_file_names_are_written_once():
    assert pipeline_file_names(ROOT, PACKAGE) == {
        "sft.jsonl", "preference.jsonl", "scored.jsonl", "diagnostics.json"
    }  # fmt: skip
    assert file_name_literals(ROOT, PACKAGE) == []


def test_engines_import_only_the_sampling_interface():
    graph = import_graph(ROOT, PACKAGE)
    named = {*ENGINES, *ENGINE_MAY_IMPORT, *set().union(*ENGINE_PARTS.values())}
    for module in named:
        assert f"{PACKAGE}.sampling.{module}" in graph  # the rule names real files
    assert engine_violations(graph) == []


def test_engines_import_no_heavy_library_at_module_level():
    assert heavy_imports(ROOT, PACKAGE, "sampling", ENGINE_HEAVY) == []


def _last_json_line(code: str) -> Any:
    """``python -c code`` in a fresh interpreter on this checkout: it exits 0,
    and its last line of output is JSON, returned parsed."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_factory_registers_the_engines_and_loads_nothing_heavy():
    """Every built-in engine registers on import, and none pulls in its library."""
    code = (
        "import json, sys\n"
        "from axolotl_sealong.sampling.factory import SAMPLERS\n"
        "from axolotl_sealong.sampling.registry import ENGINES\n"
        f"heavy = {set(ENGINE_HEAVY)!r}\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
        "print(json.dumps([list(SAMPLERS), list(ENGINES), loaded]))\n"
    )
    samplers, engines, loaded = _last_json_line(code)
    assert engines == ["hf", "vllm", "openai", "vllm_server"]
    assert samplers == ["auto", *engines] and loaded == []


@pytest.mark.parametrize("sub", ["common", "core"])
def test_bottom_layers_import_no_heavy_library_at_module_level(sub):
    assert heavy_imports(ROOT, PACKAGE, sub) == []


def test_importing_the_core_loads_no_torch():
    modules = sorted(
        name
        for name in module_names(ROOT, PACKAGE)
        if name.startswith((PACKAGE + ".core", PACKAGE + ".common"))
    )
    assert len(modules) >= 10
    # One interpreter; after each import, what is loaded (the first module that
    # shows a library is the one that pulled it in).
    code = (
        "import importlib, json, sys\n"
        f"heavy, out = {set(HEAVY)!r}, {{}}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    out[name] = sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
        "print(json.dumps(out))\n"
    )
    loaded = _last_json_line(code)
    assert {name: libs for name, libs in loaded.items() if libs} == {}


# -- the checker itself can fail ------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_lazy_relative_and_from_package_circles(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from . import b\n",
            "pkg/b.py": "from pkg.sub import c\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "from ..a import f\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    assert find_cycle(import_graph(tmp_path, "pkg", top_only=True)) is None


def test_checker_follows_parent_packages_but_not_the_importers_own(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from pkg.sub import c\n",
            "pkg/sub/c.py": "import pkg.sub.d\n",
            "pkg/sub/d.py": "",
            "pkg/e.py": "import pkg.sub.d\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.c"] == {"pkg.sub.d"}  # pkg.sub is being imported already
    assert graph["pkg.e"] == {"pkg.sub", "pkg.sub.d"}  # runs pkg/sub/__init__
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    ("module", "line", "rule"),
    [
        ("core/x.py", "from axolotl_sealong.cli import main\n", "layer"),
        ("data/x.py", "def f():\n    import axolotl_sealong.demo.run\n", "layer"),
        ("common/x.py", "from axolotl_sealong.core import ok\n", "layer"),
        ("sampling/hf.py", "from axolotl_sealong.core.ok import f\n", "layer"),
        ("core/w.py", "from axolotl_sealong.data import rows\n", "layer"),
        ("iterate/x.py", "from axolotl_sealong.demo import run\n", "layer"),
        ("iterate/x.py", "def f():\n    import axolotl_sealong.cli.main\n", "layer"),
        ("integrations/x.py", "from axolotl_sealong.iterate import loop\n", "layer"),
        ("core/v.py", "from axolotl_sealong.iterate.loop import f\n", "layer"),
        ("sampling/hf.py", "from axolotl_sealong.sampling import factory\n", "engine"),
        ("sampling/base.py", "from axolotl_sealong.sampling.hf import X\n", "engine"),
        ("sampling/hf_cpu.py", "from axolotl_sealong.sampling import hf\n", "engine"),
        (
            "sampling/hf_cpu.py",
            "from axolotl_sealong.sampling.server_env import X\n",
            "engine",
        ),
        (
            "sampling/vllm.py",
            "from axolotl_sealong.sampling.hf_cpu import X\n",
            "engine",
        ),
        ("sampling/registry.py", "from axolotl_sealong.sampling import hf\n", "engine"),
        ("core/y.py", "import torch\n", "heavy"),
        ("core/z.py", "try:\n    from transformers import A\nexcept: pass\n", "heavy"),
    ],
)
def test_each_rule_catches_a_bad_import(tmp_path, module, line, rule):
    files = {
        f"{PACKAGE}/__init__.py": "",
        **{
            f"{PACKAGE}/{sub}/__init__.py": ""
            for sub in ("common", "core", "sampling", "data")
        },
        f"{PACKAGE}/data/rows.py": "",
        f"{PACKAGE}/cli/main.py": "",
        f"{PACKAGE}/demo/run.py": "",
        f"{PACKAGE}/iterate/loop.py": "",
        f"{PACKAGE}/sampling/factory.py": "",
        f"{PACKAGE}/sampling/hf.py": "from axolotl_sealong.sampling import hf_cpu\n",
        f"{PACKAGE}/sampling/hf_cpu.py": "from axolotl_sealong.sampling import base\n",
        f"{PACKAGE}/sampling/base.py": "",
        f"{PACKAGE}/sampling/registry.py": "",
        f"{PACKAGE}/sampling/options.py": "",
        f"{PACKAGE}/sampling/vllm.py": "from axolotl_sealong.sampling import options\n",
        f"{PACKAGE}/sampling/server_env.py": "",
        f"{PACKAGE}/core/ok.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torch\ndef f():\n    import torch\n",
    }
    _write(tmp_path, files)
    graph = import_graph(tmp_path, PACKAGE)
    clean = (layer_violations(graph), engine_violations(graph))
    assert clean == ([], []) and heavy_imports(tmp_path, PACKAGE, "core") == []
    _write(tmp_path, {f"{PACKAGE}/{module}": line})
    graph = import_graph(tmp_path, PACKAGE)
    found = {
        "layer": layer_violations(graph),
        "engine": engine_violations(graph),
        "heavy": heavy_imports(tmp_path, PACKAGE, "core"),
    }
    assert found[rule], f"{rule} rule missed {line!r} in {module}"


def test_file_name_checker_finds_a_literal_but_not_prose(tmp_path):
    _write(
        tmp_path,
        {
            f"{PACKAGE}/__init__.py": "",
            f"{PACKAGE}/core/__init__.py": "",
            f"{PACKAGE}/core/pipeline.py": 'SCORED_FILE = "scored.jsonl"\nX = "y"\n',
            f"{PACKAGE}/a.py": '"""Reads scored.jsonl."""\n# scored.jsonl\n'
            'def f():\n    """scored.jsonl"""\n    return "the scored.jsonl rows"\n',
        },
    )
    assert pipeline_file_names(tmp_path, PACKAGE) == {"scored.jsonl"}
    assert file_name_literals(tmp_path, PACKAGE) == []
    for line in (
        'P = "scored.jsonl"\n',
        'G = "*/scored.jsonl"\n',
        'def f(d):\n    return f"{d}/scored.jsonl"\n',
    ):
        _write(tmp_path, {f"{PACKAGE}/b.py": line})
        assert file_name_literals(tmp_path, PACKAGE), f"missed {line!r}"


def test_the_slow_tier_is_one_folder():
    """``pytest -m "not slow"`` is the fast tier only if nothing outside
    tests/slow/ (which marks its tests as a whole) marks itself slow."""
    tests = ROOT / "tests"
    outside = [
        str(path.relative_to(ROOT))
        for path in sorted(tests.rglob("*.py"))
        if "slow" not in path.relative_to(tests).parts[:1]
        and "mark.slow" in path.read_text()
        and path.name != "test_structure.py"
    ]
    assert outside == []
    assert "pytest.mark.slow" in (tests / "slow" / "conftest.py").read_text()
    assert len(list((tests / "slow").glob("test_*.py"))) >= 20
