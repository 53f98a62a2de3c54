"""The package's architecture as a check: data flows one way, no module imports back up.

Every `from fedsynth... import` (module level or inside a function) is an edge; a layer may
import from the layers below it only, and no set of modules imports each other in a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "fedsynth"
# Bottom to top. A folder is one user concept; the top-level modules are shared conventions.
LAYERS = [
    {"__init__", "errors", "config_files", "figures", "suppression"},
    {"data"},
    {"marginals"},
    {"model"},
    {"privacy", "evaluation"},
    {"client"},
    {"server"},
    {"deploy", "release"},
    {"workflows"},
    {"cli"},
]
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the fedsynth modules it imports (a name imported from a package counts as the
    submodule of that name where there is one)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("fedsynth"):
                for target in [node.module, *(f"{node.module}.{a.name}" for a in node.names)]:
                    while target and target not in modules:
                        target = target.rpartition(".")[0]
                    if target and target != name:
                        edges.setdefault(name, set()).add(target)
            elif isinstance(node, ast.Import):
                edges.setdefault(name, set()).update(a.name for a in node.names if a.name in modules and a.name != name)
    return edges


def _layer(module: str) -> int:
    parts = module.split(".")
    concept = parts[1] if len(parts) > 1 else "__init__"
    return next(i for i, layer in enumerate(LAYERS) if concept in layer)


def test_every_module_belongs_to_a_layer() -> None:
    for module in _modules():
        _layer(module)  # StopIteration names an unplaced concept


def test_no_import_runs_from_a_lower_layer_to_a_higher_or_across_one() -> None:
    upward = []
    for source, targets in _imports(_modules()).items():
        for target in targets:
            low, high = _layer(source), _layer(target)
            same_concept = source.split(".")[:2] == target.split(".")[:2]
            if high > low or (high == low and not same_concept and len(LAYERS[low]) > 1 and low > 0):
                upward.append(f"{source} -> {target}")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_import_loop() -> None:
    edges = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in _modules():
        if module not in index:
            visit(module)
    assert not loops, f"modules that import each other: {loops}"


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    assert not {name: n for name, n in sizes.items() if n > MAX_LINES}
