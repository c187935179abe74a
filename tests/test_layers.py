"""The project's layers stack: growth/ is a library that needs only torch; baselines/ sit on it;
bench/ (the harness) on both; reports/ on bench. Checked on the source, every import counted (at
module level and inside functions), so that a cycle cannot hide in a late import."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("growth", "baselines", "bench", "reports")
# what each package may import from the project (itself included); anything else must be stdlib or torch
MAY_IMPORT = {"growth": {"growth"}, "baselines": {"growth", "baselines"},
              "bench": {"growth", "baselines", "bench"}, "reports": {"growth", "baselines", "bench", "reports"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute and relative), at any depth of the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # "from pkg import module"
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files} for m, p in files.items()}


def test_packages_import_only_their_layers():
    graph = _graph()
    bad = [f"{m} imports {i}" for m, deps in graph.items() for i in deps
           if i.split(".")[0] not in MAY_IMPORT[m.split(".")[0]]]
    assert not bad, bad


def test_growth_needs_only_torch_and_the_standard_library():
    allowed = {"torch", "growth", "__future__"} | set(sys.stdlib_module_names)
    bad = [f"{_module_name(p)} imports {i}" for p in (ROOT / "growth").rglob("*.py") for i in _imports(p)
           if i.split(".")[0] not in allowed]
    assert not bad, bad


def test_no_import_cycle():
    graph = _graph()
    # a package's __init__ is where its submodules are found, not a dependency of theirs
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_checks_see_a_cycle(tmp_path, monkeypatch):
    """The cycle check is not vacuous: a graph with a cycle through a late import is caught."""
    monkeypatch.setattr(sys.modules[__name__], "_graph",
                        lambda: {"bench.a": {"bench.b"}, "bench.b": {"bench.a"}, "growth.c": set()})
    with pytest.raises(AssertionError, match="bench.a -> bench.b -> bench.a"):
        test_no_import_cycle()
