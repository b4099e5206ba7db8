"""The dependency rule, read from the source: which package may import which, the server's layers pointing one
way, no import cycle, and the request pipeline free of any web framework. ``docs/architecture.md`` draws it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = ("common", "train", "export", "score", "server", "benchmarks")

# Each top-level package and what it may import of ours (itself included). What two of them share lives in common.
ALLOWED = {
    "common": {"common"},
    "train": {"common", "train"},
    "export": {"common", "export"},
    "score": {"common", "score"},
    "server": {"common", "server"},
}
# server's sub-packages, lowest first: a module may import its own sub-package and the ones before it.
SERVER_LAYERS = ("config", "monitoring", "core", "explain", "pipeline", "ops", "grpc", "http", "__main__")
FRAMEWORK_FREE = ("config", "monitoring", "core", "explain", "pipeline")  # the doors adapt; these decide
FRAMEWORKS = ("starlette", "uvicorn", "httptools", "fastapi", "grpc")


def imports_of(root: Path, packages: tuple[str, ...] = OURS) -> dict[str, set[str]]:
    """Each module under ``root`` (dotted name) and every module it imports, anywhere in its code."""
    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    # "from a.b import c": c may be a module; cycles() resolves each name to the module it is
                    found.update(f"{node.module}.{alias.name}" for alias in node.names)
            graph[module] = found
    return graph


def _layer(module: str) -> int:
    sub = module.split(".")[1] if "." in module else "__main__"
    return SERVER_LAYERS.index(sub)


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the rule, as one line each; an empty list when the code follows it."""
    found = []
    for module, imported in sorted(graph.items()):
        top = module.split(".")[0]
        for name in sorted(imported):
            target = name.split(".")[0]
            if top in ALLOWED and target in OURS and target not in ALLOWED[top]:
                found.append(f"{module} imports {name}: {top} may import only {sorted(ALLOWED[top])}")
            if top == "server" and target == "server" and name != "server" and module != "server":
                if _layer(name) > _layer(module):
                    found.append(f"{module} imports {name}: a lower layer may not import a higher one")
            if module.startswith(tuple(f"server.{sub}" for sub in FRAMEWORK_FREE)) and target in FRAMEWORKS:
                found.append(f"{module} imports {name}: the pipeline's layers import no web framework")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles among our modules (one example path per strongly connected group)."""
    edges = defaultdict(set)
    for module, imported in graph.items():
        for name in imported:
            # "from a.b import c" names a.b (or a.b.c, when c is a module): resolve to a module we know
            while name and name not in graph:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                edges[module].add(name)
    found, state = [], dict.fromkeys(graph, 0)  # 0 unvisited, 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for name in sorted(edges[module]):
            if state[name] == 1:
                found.append([*path[path.index(name) :], name])
            elif state[name] == 0:
                visit(name, [*path, name])
        state[module] = 2

    for module in sorted(graph):
        if state[module] == 0:
            visit(module, [module])
    return found


def test_the_code_follows_the_dependency_rule() -> None:
    graph = imports_of(ROOT)
    assert {"server.pipeline.pipeline", "server.http.fast.protocol", "common.model.loader"} <= set(graph)
    assert violations(graph) == []


def _plant(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return imports_of(root, ("common", "score", "server"))


def test_the_rule_reports_a_planted_violation_of_each_kind(tmp_path: Path) -> None:
    graph = _plant(
        tmp_path,
        {
            "common/__init__.py": "",
            "score/__init__.py": "",
            "score/run.py": "from server.core import served\n",  # across packages
            "server/__init__.py": "",
            "server/core/__init__.py": "",
            "server/core/served.py": "def f():\n    from server.http import app\n",  # a lower layer reaching up
            "server/pipeline/__init__.py": "",
            "server/pipeline/a.py": "import starlette.requests\nfrom server.pipeline import b\n",  # a framework
            "server/pipeline/b.py": "from server.pipeline.a import x\n",  # a cycle
            "server/http/__init__.py": "",
            "server/http/app.py": "from server.pipeline import a\n",  # downwards: allowed
        },
    )
    found = violations(graph)
    assert any(line.startswith("score.run imports server.core") for line in found)
    assert any(line.startswith("server.core.served imports server.http") for line in found)
    assert any(line.startswith("server.pipeline.a imports starlette") for line in found)
    assert any("cycle" in line and "server.pipeline.a" in line and "server.pipeline.b" in line for line in found)
    assert len(found) == 4


def test_the_server_uses_uvicorn_through_its_public_api_only() -> None:
    # uvicorn's submodules (protocols, server, supervisors, ...) are its internals: a release may change them, and a
    # server built on them stops working when a user upgrades. The fast mode uses no uvicorn at all.
    graph = imports_of(ROOT, ("server",))
    private = sorted(
        f"{module} imports {name}"
        for module, names in graph.items()
        for name in names
        if name.startswith("uvicorn.") and name not in ("uvicorn.Config", "uvicorn.Server", "uvicorn.run")
    )
    assert private == []
    assert [module for module, names in graph.items() if "uvicorn" in names] == ["server.http.worker"]
