"""The architecture contract: layers with imports only going down, no import cycles, one
installed name.

Every ``import`` statement of every module under ``lkca_edge`` is read from the source (lazy ones
inside functions included), mapped to the module it names and checked against the layers below.
The top-level folders ``converters/``, ``profiles/`` and ``apps/`` are parts of ``lkca_edge`` through
the package-dir mapping in pyproject.toml, so this reads that mapping too (an import-linter run
would not find them: they are not under ``lkca_edge/`` on disk).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import modules of its own layer or of layers below, never above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("lkca_edge.errors", "lkca_edge.fileio", "lkca_edge.preprocessing",
                "lkca_edge.models_config", "lkca_edge.forms", "lkca_edge.manifest",
                "lkca_edge.gates", "lkca_edge.budgets", "lkca_edge.hostinfo",
                "lkca_edge.versions", "lkca_edge.isolation", "lkca_edge.progress",
                "lkca_edge.logs", "lkca_edge.labels", "lkca_edge.datarecord",
                "lkca_edge.validation_pack")),
    ("models", ("lkca_edge.models", "lkca_edge.image_input", "lkca_edge.evaluation", "lkca_edge.zoo",
                "lkca_edge.checkpoints", "lkca_edge.builder", "lkca_edge.data", "lkca_edge.train")),
    ("plugins", ("lkca_edge.converters", "lkca_edge.profiles")),
    ("pipelines", ("lkca_edge.pipelines",)),
    ("apps", ("lkca_edge.bench", "lkca_edge.results", "lkca_edge.apps")),
    ("api", ("lkca_edge.api",)),
    ("cli", ("lkca_edge.cli", "lkca_edge.commands", "lkca_edge.__main__")),
]


def _package_dirs() -> dict[str, Path]:
    """Installed package name -> source folder, from pyproject.toml."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = {name: ROOT / folder for name, folder in config.get("package-dir", {}).items()}
    mapping.setdefault("lkca_edge", ROOT / "lkca_edge")
    return mapping


def _modules() -> dict[str, Path]:
    """Every module of the installed lkca_edge package -> its source file."""
    found: dict[str, Path] = {}
    dirs = _package_dirs()
    for package, folder in dirs.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            # a sub-folder that is itself mapped elsewhere (none today) would be skipped here
            name = ".".join([package, *parts])
            if any(name.startswith(other + ".") or name == other for other in dirs
                   if other != package and other.startswith(package + ".")):
                continue
            found[name] = path
    return found


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            # "from lkca_edge.converters import _pt2e" imports a module too
            out += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The lkca_edge module an import names (the longest existing prefix), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _layer(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[tuple[str, str], int] = {}
    for module, path in modules.items():
        for name, line in _imports(path, module):
            target = _resolve(name, modules)
            if target and target != module and target != "lkca_edge":
                edges[module].add(target)
                where.setdefault((module, target), line)
    return modules, edges, where


def test_every_module_has_a_layer(graph):
    modules, _, _ = graph
    missing = sorted(m for m in modules if m != "lkca_edge" and _layer(m) is None)
    assert not missing, f"modules without a layer in tests/test_architecture.py: {missing}"


def test_imports_only_go_down(graph):
    modules, edges, where = graph
    upward = []
    for module, targets in edges.items():
        own = _layer(module)
        for target in targets:
            if own is not None and _layer(target) is not None and _layer(target) > own:
                upward.append(f"{modules[module].relative_to(ROOT)}:{where[module, target]} "
                              f"({LAYERS[own][0]}) imports {target} ({LAYERS[_layer(target)][0]})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycles(graph):
    """No strongly connected component of more than one module (Tarjan's algorithm)."""
    _, edges, _ = graph
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # a package importing its own submodules (re-exports) is not a cycle of concern
            # unless a submodule imports the package back; both directions appear as edges
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_one_installed_name(tmp_path):
    """A built wheel holds lkca_edge/ and its dist-info, nothing else at the top level."""
    import subprocess
    import zipfile

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("lkca_edge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"lkca_edge", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, top
    for must in ("lkca_edge/converters/base.py", "lkca_edge/profiles/devices/host.yaml",
                 "lkca_edge/apps/report.py", "lkca_edge/weights/lkca-1m-digits.pt"):
        assert must in names
