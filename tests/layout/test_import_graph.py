"""The package import graph: README.md states which top-level package may import which, and the
imports in the code (read from the AST: every import statement, also those inside functions and
under TYPE_CHECKING) follow it. The graph stays acyclic between packages and between the modules
of every package, and no module imports a private name (``_x``) of another package.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def top_level_packages() -> list[str]:
    """Every directory at the repository root that is a Python package, tests/ aside."""
    return sorted(
        p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"
    )


@dataclass(frozen=True)
class Import:
    importer: str  # module doing the import, e.g. "connector.service"
    target: str  # module imported, e.g. "connector.results" (a module or a package)
    name: str | None  # the name taken from it (`from target import name`), or None
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[Import]:
    """The imports in one module's source, resolved to module names (relative ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:  # `from package import module`
                    yield Import(name, submodule, None, node.lineno)
                else:
                    yield Import(name, source, alias.name, node.lineno)


def all_imports() -> tuple[list[Import], set[str]]:
    packages = top_level_packages()
    sources = {name: path for package in packages for name, path in modules(package).items()}
    known = set(sources)
    found = [imp for name, path in sources.items() for imp in imports_of(name, path, known)]
    ours = [imp for imp in found if imp.target.split(".")[0] in packages]
    return ours, known


def readme_table(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table after the line ``heading`` in README.md."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # header and separator rows


def allowed_directions() -> dict[str, set[str]]:
    """README.md's "### Import directions" table: package -> the packages it may import."""
    allowed = {}
    for package, may_import in readme_table("### Import directions"):
        names = re.findall(r"`(\w+)/`", may_import)
        allowed[package.strip("`/")] = set(names)
    return allowed


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the components with more than one node (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def package_graph() -> dict[str, set[str]]:
    imports, _ = all_imports()
    graph: dict[str, set[str]] = {p: set() for p in top_level_packages()}
    for imp in imports:
        source, target = imp.importer.split(".")[0], imp.target.split(".")[0]
        if source != target:
            graph[source].add(target)
    return graph


def module_graph() -> dict[str, set[str]]:
    imports, known = all_imports()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for imp in imports:
        if imp.target in known and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return graph


def test_the_layout_table_lists_every_top_level_package() -> None:
    listed = {row[0].strip("`/") for row in readme_table("## Layout")}
    assert set(top_level_packages()) <= listed


def test_readme_states_the_import_directions_of_every_package() -> None:
    allowed = allowed_directions()
    assert set(allowed) == set(top_level_packages())
    for package, targets in allowed.items():
        assert targets <= set(allowed), f"{package} names an unknown package"
    assert strongly_connected(allowed) == [], "the stated directions must be acyclic"


def test_every_import_between_packages_follows_the_stated_directions() -> None:
    allowed = allowed_directions()
    imports, _ = all_imports()
    wrong = [
        f"{imp.importer}:{imp.line} imports {imp.target}"
        for imp in imports
        if (source := imp.importer.split(".")[0]) != (target := imp.target.split(".")[0])
        and target not in allowed[source]
    ]
    assert wrong == []


def test_the_package_graph_is_acyclic() -> None:
    graph = package_graph()
    assert strongly_connected(graph) == []


def test_no_module_imports_a_private_name_of_another_package() -> None:
    imports, _ = all_imports()

    def private(part: str) -> bool:
        return part.startswith("_") and not part.startswith("__")

    wrong = [
        f"{imp.importer}:{imp.line} imports {imp.target} {imp.name or ''}".strip()
        for imp in imports
        if imp.importer.split(".")[0] != imp.target.split(".")[0]
        and (any(map(private, imp.target.split("."))) or private(imp.name or ""))
    ]
    assert wrong == []


def test_no_cycles_between_the_modules_of_any_package() -> None:
    cycles = strongly_connected(module_graph())
    assert [sorted(c) for c in cycles] == []
