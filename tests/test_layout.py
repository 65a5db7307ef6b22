"""The package's layer order holds: no module imports a higher layer, and there is no import cycle.

Layers, lowest first (a module may import its own layer and the ones below):

    core          errors, io, configuration, resume, _lazy, the package root
    data          spul.data
    models        spul.models, artifacts, testing
    interventions spul.interventions      (what an artifact applies to a frozen model at inference)
    methods       spul.methods            (each method: config, train → artifact, load → intervention)
    evaluation    spul.evaluation         (metrics, reports, figures, attacks)
    pipeline      pipeline, run_config, experiments, bench, hub
    interfaces    spul.interfaces, spul.serving, __main__

Imports inside functions count too (they are still arrows); only ``if TYPE_CHECKING`` blocks are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "spul"
LAYERS = {
    "core": 0, "data": 1, "models": 2, "interventions": 3, "methods": 4, "evaluation": 5, "pipeline": 6, "interfaces": 7,
}
ROOM = {
    "errors": "core", "io": "core", "configuration": "core", "resume": "core", "_lazy": "core", "__init__": "core", "__main__": "interfaces",
    "data": "data", "models": "models", "artifacts": "models", "testing": "models", "interventions": "interventions",
    "methods": "methods", "evaluation": "evaluation", "pipeline": "pipeline", "run_config": "pipeline", "experiments": "pipeline", "bench": "pipeline",
    "hub": "pipeline",
    "interfaces": "interfaces", "serving": "interfaces",
    "run_config_generation": "methods", "pipeline_generation": "pipeline",
}


def _module_name(path: Path) -> str:
    parts = ("spul",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def _room(module: str) -> str:
    parts = module.split(".")
    return ROOM[parts[1] if len(parts) > 1 else "__init__"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` blocks are not runtime arrows
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("spul"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base == "spul" or base.startswith("spul."):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path) if m in files and m != name}
    return graph


def test_every_module_has_a_room():
    for name in _graph():
        assert _room(name) in LAYERS, name


def test_no_import_points_to_a_higher_layer():
    upward = [f"{src} ({_room(src)}) -> {dst} ({_room(dst)})" for src, targets in _graph().items() for dst in targets
              if LAYERS[_room(dst)] > LAYERS[_room(src)]]
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ re-exporting its submodules is not a cycle of ideas; submodule -> own package __init__ is
    # then the only way back, so arrows into a package's own __init__ from inside it are left out
    edges = {src: {d for d in dst if not src.startswith(d + ".")} for src, dst in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:10])
