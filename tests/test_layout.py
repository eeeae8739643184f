"""The package's shape: imports run one way (recipes -> run folder -> {card, hub, report} -> components ->
registry / prior / labels), with no import cycle, and a component registered from outside the package reaches
the grid's tables, the report and the model card without an edit anywhere else."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lt_registry"

#: the layers, lowest first; a module may import its own layer or lower ones (a module not named here sits in
#: the layer of its sub-package, e.g. lt_registry.losses.ce in "components")
LAYERS = {
    "base": ["_version", "_registry", "labels", "prior", "paths"],
    "components": ["losses", "mixers", "samplers", "metrics", "data", "models", "schedule", "engine", "config",
                   "provenance", "calibration", "interop"],
    "outputs": ["report", "card", "hub"],
    "run folder": ["run", "predict"],
    "grid": ["grid"],
}
RANK = {name: i for i, names in enumerate(LAYERS.values()) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> Set[str]:
    """lt_registry modules ``path`` imports, at module level or inside functions (both count: a cycle through
    a function-level import is still a cycle of concerns)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("lt_registry"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("lt_registry"):
                continue
            for a in node.names:  # "from . import hub" imports a module
                sub = f"{mod}.{a.name}"
                out.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).is_file()
                        or (PKG.parent / sub.replace(".", "/")).is_dir() else mod)
    out.discard(name)
    return out


def _graph() -> Dict[str, Set[str]]:
    mods = {_module_name(p): p for p in PKG.rglob("*.py")}
    # package __init__ files only re-export; the edges that matter are between the modules that hold the code
    return {m: {i for i in _imports(p) if i in mods and i != "lt_registry"} for m, p in mods.items()
            if m != "lt_registry"}


def _rank(module: str) -> int:
    top = module.split(".")[1]
    assert top in RANK, f"{module} is in no layer of tests/test_layout.py: add it where it belongs"
    return RANK[top]


def test_no_module_imports_the_top_level_package():
    """``import lt_registry`` imports everything; a library module that did it would depend on all of them."""
    offenders = sorted(m for m, deps in ((m, _imports(p)) for m, p in
                                         ((_module_name(p), p) for p in PKG.rglob("*.py")))
                       if "lt_registry" in deps and m != "lt_registry")
    assert not offenders, offenders


def test_imports_run_one_way():
    bad = [f"{m} ({_rank(m)}) imports {d} ({_rank(d)})" for m, deps in _graph().items() for d in deps
           if _rank(d) > _rank(m)]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    graph = _graph()
    # a package's __init__ stands for its sub-modules: drop edges from a package to its own children
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state: Dict[str, int] = {}
    stack: list = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported first, with no lt_registry module loaded yet (torch & co stay loaded: only our
    package is dropped between imports), so any order a user's program picks works."""
    mods = sorted(_module_name(p) for p in PKG.rglob("*.py"))
    code = ("import importlib, sys, torch, timm\n"
            f"failed = []\nfor m in {mods!r}:\n"
            "    for k in [k for k in sys.modules if k == 'lt_registry' or k.startswith('lt_registry.')]:\n"
            "        del sys.modules[k]\n"
            "    try:\n        importlib.import_module(m)\n"
            "    except Exception as e:\n        failed.append(f'{m}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(failed))\nsys.exit(1 if failed else 0)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]


def test_layout_test_would_catch_a_cycle(tmp_path, monkeypatch):
    """The cycle check itself: two modules importing each other are reported."""
    pkg = tmp_path / "lt_registry"
    (pkg / "losses").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "losses" / "__init__.py").write_text("")
    (pkg / "losses" / "a.py").write_text("from .b import x\n")
    (pkg / "losses" / "b.py").write_text("def f():\n    from .a import y\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    with pytest.raises(pytest.fail.Exception, match="import cycle: lt_registry.losses.a -> lt_registry.losses.b"):
        test_no_import_cycle_between_modules()


# ---- a component added from outside ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_loss_and_a_mixer_registered_outside_reach_the_grid_report_and_card(tmp_path, outside_components):
    from conftest import load_recipe

    from lt_registry.grid import collect_results, make_cell, results_markdown

    train = load_recipe("train")
    cells = [make_cell("digits_lt", None, "none", "ce", 0), make_cell("digits_lt", None, "outside_mix", "outside_ce", 0)]
    from accelerate.state import AcceleratorState, GradientState

    try:  # in this process, so that the outside registrations are seen
        for c in cells:
            rc = train.main(["--output", str(tmp_path), "--experiment", c.name, "--model", "resnet20_cifar", "--epochs",
                             "1", "-b", "64", "--workers", "0", "--no-progress", "--mix", c.mix.name, "--loss",
                             c.loss.name])
            assert rc == 0
    finally:  # accelerate's process-wide state would leak into later (forked, multi-process) tests
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    run = tmp_path / cells[1].name
    assert (run / "calibration" / "reliability.png").is_file() and (run / "per_class.png").is_file()  # the report
    card = (run / "README.md").read_text()
    assert "the **OutsideMix** mixer and the **OutsideCE** loss" in card  # the card, with the entries' labels
    assert json.loads((run / "config.json").read_text())["lt"]["loss"] == "outside_ce"
    md = results_markdown(collect_results(cells, tmp_path))  # the grid's table: label, paper order
    assert "| Mixer \\ Loss | CE | OutsideCE |" in md
    assert md.index("| None |") < md.index("| OutsideMix |")


@pytest.mark.parametrize("old, new", [("lt_registry.hub.build_model_card", "lt_registry.card"),
                                      ("lt_registry.run.resolve_schedule", "lt_registry.schedule"),
                                      ("lt_registry.run.build_model", "lt_registry.models.factory")])
def test_a_moved_name_says_where_it_went(old, new):
    import importlib

    module, name = old.rsplit(".", 1)
    with pytest.raises(AttributeError, match=f"moved to {new}"):
        getattr(importlib.import_module(module), name)
