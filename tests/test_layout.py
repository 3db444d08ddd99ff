"""The house's shape: every subpackage in the wheel, no import cycles, imports at the top,
and an import-layer contract that really fails on an upward import."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

# The development venv's import graph library (import-linter's); the Pi's numpy-1.24 venv
# holds the device stack alone, and the layout is the same whichever numpy runs it.
grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter in the dev venv")

REPO = Path(__file__).resolve().parent.parent
SOURCES = {
    "leukoscope": REPO / "device/leukoscope",
    "leukoscope_tools": REPO / "tools/leukoscope_tools",
}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
#: Libraries that exist only on a Pi: the one reason a module may import inside a function.
HARDWARE_ONLY = ("picamera2", "gpiozero.pins.lgpio", "gpiozero.pins.rpigpio")


def _packages_in_tree() -> set[str]:
    found = set()
    for name, root in SOURCES.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root.parent)
            found.add(".".join(rel.parts))
        assert name in found
    return found


@pytest.mark.slow
def test_the_wheel_holds_every_subpackage_and_the_package_data(tmp_path: Path) -> None:
    """A wheel built from the tree (as the Pi installs it) lists every package folder."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("leukoscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert _packages_in_tree() <= in_wheel, sorted(_packages_in_tree() - in_wheel)
    for data in (
        "leukoscope/py.typed",
        "leukoscope/configs/pi.toml",
        "leukoscope/configs/laptop.toml",
    ):
        assert data in names
    assert any(n.startswith("leukoscope/web/templates/") for n in names)
    assert any(n.startswith("leukoscope/web/static/") for n in names)


def _cycles(graph: Any) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    modules = sorted(m for m in graph.modules if m.split(".")[0] in SOURCES)
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child.split(".")[0] not in SOURCES:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.append(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = grimp.build_graph(*SOURCES, include_external_packages=False)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("leukoscope.a", "leukoscope.b", "leukoscope.c"):
        graph.add_module(m)
    graph.add_import(importer="leukoscope.a", imported="leukoscope.b")
    graph.add_import(importer="leukoscope.b", imported="leukoscope.c")
    graph.add_import(importer="leukoscope.c", imported="leukoscope.a")
    assert _cycles(graph) == [["leukoscope.a", "leukoscope.b", "leukoscope.c"]]


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import that is not at module level."""
    tree = ast.parse(path.read_text(), str(path))
    top: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks at module level
            top.update(id(n) for n in node.body)
        top.add(id(node))
    found: list[tuple[int, str]] = []
    for walked in ast.walk(tree):
        if isinstance(walked, ast.Import | ast.ImportFrom) and id(walked) not in top:
            names = (
                [a.name for a in walked.names]
                if isinstance(walked, ast.Import)
                else [walked.module or ""]
            )
            found.extend((walked.lineno, n) for n in names)
    return found


def test_imports_sit_at_the_top_except_pi_only_hardware_with_its_reason() -> None:
    bad = []
    for root in SOURCES.values():
        for path in sorted(root.rglob("*.py")):
            lines = path.read_text().splitlines()
            for lineno, module in _function_level_imports(path):
                reason = lines[lineno - 2].strip().startswith("#") or "#" in lines[lineno - 1]
                if not (module.startswith(HARDWARE_ONLY) and reason):
                    bad.append(f"{path.relative_to(REPO)}:{lineno}: {module}")
    assert bad == []


def test_the_layer_contract_holds() -> None:
    done = subprocess.run([LINT_IMPORTS], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_upward_import_breaks_the_layer_contract(tmp_path: Path) -> None:
    """A copy of the tree where the core imports the CLI: lint-imports must refuse it."""
    shutil.copytree(SOURCES["leukoscope"], tmp_path / "leukoscope")
    shutil.copytree(SOURCES["leukoscope_tools"], tmp_path / "leukoscope_tools")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    fsutil = tmp_path / "leukoscope/core/fsutil.py"
    fsutil.write_text(fsutil.read_text() + "\nfrom leukoscope.cli import main  # noqa\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = subprocess.run([LINT_IMPORTS], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode != 0
    assert "leukoscope.core is not allowed to import leukoscope.cli" in done.stdout
    assert "leukoscope.core.fsutil -> leukoscope.cli" in done.stdout
