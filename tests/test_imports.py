"""The project's import layering, read statically (ast; nothing is imported, TensorFlow least of all):
library modules below, command lines on top, no import circles. Imports inside functions count.

(a) no import circle between project modules;
(b) no library module imports a command-line module (a module named cli.py or __main__.py, or an entry point of
    pyproject.toml [project.scripts]);
(c) train/ never imports convert/ (conversion reads what training writes, not the other way);
(d) edge/ (the device runtime) never imports train/, convert/ or benchmarks/;
(e) benchmarks/ outside benchmarks/studies/ (the benchmark command, which the wheel ships as
    edge.benchmarks) imports only edge/ and, by relative imports, itself;
(f) no module of the runtime imports edge.metrics (scikit-learn: the benchmark and train extras only).
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "train", "convert", "benchmarks")

# Violations owned elsewhere, each with where it is being fixed. An entry that no longer holds fails
# the test too, so the list only shrinks.
KNOWN = {
}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every dotted name an `import` or `from ... import` anywhere in the source (functions, classes,
    conditionals included) can refer to: the module itself and, for `from m import n`, m.n too."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)
    return names


def project_imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (a name resolved to its longest project-module prefix)."""
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path.read_text(), module, path.name == "__init__.py"):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def command_line_modules(modules: dict[str, Path]) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = project["tool"]["setuptools"].get("package-dir", {})  # the wheel's name -> the checkout's folder
    entry_points = set()
    for target in project["project"]["scripts"].values():
        module = target.split(":")[0]
        for name, folder in folders.items():
            if module.startswith(name + "."):
                module = folder.replace("/", ".") + module[len(name):]
        entry_points.add(module)
    return {m for m in modules if m.rpartition(".")[2] in ("cli", "__main__")} | entry_points


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as one circle through it."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle(graph, component) for component in components]


def _circle(graph, component: set[str]) -> list[str]:
    """One import path that starts and ends at the component's first module."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for successor in sorted(graph[node] & component):
            if successor == start:
                return paths[node] + [start]
            if successor not in paths:
                paths[successor] = paths[node] + [successor]
                queue.append(successor)
    return sorted(component)


def violations(graph: dict[str, set[str]], commands: set[str]) -> dict[tuple[str, str], str]:
    found = {}
    for module, targets in graph.items():
        top = module.split(".")[0]
        for target in targets:
            target_top = target.split(".")[0]
            if target in commands and module not in commands:
                found[(module, target)] = "(b) a library module imports a command-line module"
            if top == "train" and target_top == "convert":
                found[(module, target)] = "(c) train/ imports convert/"
            if top == "edge" and target_top in ("train", "convert", "benchmarks"):
                found[(module, target)] = "(d) the device runtime imports training, conversion or benchmarks"
            if top == "edge" and target == "edge.metrics":
                found[(module, target)] = "(f) the device runtime imports edge.metrics (scikit-learn)"
            if shipped_benchmark(module) and (target_top in ("train", "convert") or target.startswith("benchmarks.studies")):
                found[(module, target)] = "(e) the shipped benchmark imports training, conversion or a desktop study"
    return found


def shipped_benchmark(module: str) -> bool:
    return module.split(".")[0] == "benchmarks" and not module.startswith("benchmarks.studies")


@pytest.fixture(scope="module")
def graph():
    return project_imports(project_modules())


def test_no_import_circles(graph):
    circles = import_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_layering(graph):
    found = violations(graph, command_line_modules(project_modules()))
    new = {pair: rule for pair, rule in found.items() if pair not in KNOWN}
    assert not new, "\n".join(f"{rule}: {module} imports {target}" for (module, target), rule in sorted(new.items()))
    stale = sorted(set(KNOWN) - set(found))
    assert not stale, f"fixed, remove from KNOWN: {stale}"


def test_the_shipped_benchmark_imports_itself_by_relative_imports():
    """Installed, benchmarks/ is edge.benchmarks: an absolute `benchmarks.` import would not resolve there."""
    absolute = []
    for module, path in project_modules().items():
        if shipped_benchmark(module):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
                absolute += [f"{module}: {name}" for name in names if name and name.split(".")[0] == "benchmarks"]
    assert not absolute, absolute


def test_the_walk_sees_imports_in_functions_relative_imports_and_modules_imported_from_packages():
    source = """
import os
from . import sibling
from .other import name
def later():
    from train.cli import main
    import convert.pipeline as pipeline
"""
    names = imported_names(source, "edge.module")
    assert {"os", "edge.sibling", "edge.other", "edge.other.name", "train.cli", "train.cli.main",
            "convert.pipeline"} <= names
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c", "a"]]
    commands = {"train.cli"}
    assert violations({"train.cv_run": {"train.cli"}, "train.cli": {"train.cv_run"}}, commands) == {
        ("train.cv_run", "train.cli"): "(b) a library module imports a command-line module"}
    assert set(violations({"train.torch_cv": {"convert.folds"}, "edge.x": {"train.y"}}, commands)) == {
        ("train.torch_cv", "convert.folds"), ("edge.x", "train.y")}
    assert set(violations({"benchmarks.cli": {"benchmarks.studies.peers", "edge.z"},
                           "benchmarks.studies.peers": {"train.y"}}, commands)) == {("benchmarks.cli", "benchmarks.studies.peers")}
    assert set(violations({"edge.classifier": {"edge.metrics"}, "benchmarks.accuracy": {"edge.metrics"}}, commands)) == {
        ("edge.classifier", "edge.metrics")}


def test_entry_points_are_command_line_modules():
    commands = command_line_modules(project_modules())
    assert {"train.cli", "convert.cli", "edge.cli", "edge.live", "edge.dicom_node", "benchmarks.cli"} <= commands
    assert commands <= set(project_modules())  # every entry point found in the checkout
