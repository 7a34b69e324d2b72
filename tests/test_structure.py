"""The shape of the library, read from its source: no import circles, no imports of another module's
private names, the runtime never imports the developer-only helpers, no KFP component inside ``src/mpa``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "mpa"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file, at any depth (lazy ones too),
    except those only for type checking."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, [a.name for a in node.names]))
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, names in _imports(path, name):
            if not target.startswith("mpa"):
                continue
            # `from mpa.x import y` where y is a submodule imports mpa.x.y
            for n in names or [None]:
                full = f"{target}.{n}" if n and f"{target}.{n}" in mods else target
                if full in mods and full != name:
                    graph[name].add(full)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _package_faces(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without edges into a package's own ``__init__`` from inside it (a package's face re-exports
    its modules; Python imports the package first anyway) — what remains are real module-to-module ties."""
    mods = _modules()
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    return {m: {t for t in ts if not (t in packages and m.startswith(t + "."))} for m, ts in graph.items()}


def test_the_library_has_no_import_circles():
    assert _cycles(_package_faces(_graph())) == []


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    mods = _modules()
    bad = []
    for name, path in mods.items():
        for target, names in _imports(path, name):
            if target.startswith("mpa") and target != name:
                bad += [f"{name} takes {target}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in mods]
    assert bad == []


def test_the_runtime_never_imports_the_developer_helpers():
    graph = _graph()
    users = {m for m, ts in graph.items() if any(t.startswith("mpa.devtools") for t in ts)}
    # the builders of tiny models serve the dev commands, the throughput benches and the training of the
    # toy world's shipped checkpoints (`mpa toyworld train`); no stage, orchestrator or backend uses them
    dev_side = ("mpa.devtools", "mpa.cli.dev", "mpa.throughput", "mpa.archbench", "mpa.toyworld.train")
    allowed = {m for m in users if m.startswith(dev_side)}
    assert users - allowed == set()


def test_no_kfp_component_is_defined_inside_the_library():
    hits = [str(p.relative_to(SRC)) for p in PKG.rglob("*.py")
            if "@dsl.component" in p.read_text(encoding="utf-8") or "dsl.component(" in p.read_text(encoding="utf-8")]
    assert hits == []
