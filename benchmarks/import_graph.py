"""Print maml-rl's import graph (modules of ``maml_rl``, ``envs/``, ``agents/``) and check
that imports flow one way.

    python benchmarks/import_graph.py            # the graph, one module per line
    python benchmarks/import_graph.py --check    # also exit 1 on a violated rule

Read from the source with :mod:`ast`, nothing is imported. Layers, bottom up:

* **core** — every ``maml_rl`` module that is not orchestration: task-family protocol,
  batched-env contract, samplers, batches, returns, baselines, settings validation,
  seeding, threads, logging, checkpoints, optimisers;
* **envs** (``maml_rl.envs``) and **agents** (``maml_rl.agents``) — import the core and
  their own package only;
* **orchestration** — ``config`` (the run's config, assembled from the agents' sections),
  ``factories``, ``trainer``, the ``evaluation`` package (protocol, curve, statistics,
  baseline registry, SB3, report, plot), ``cli``: tie the three together.

Rules checked: the core imports no env, agent or orchestration module; envs and agents
import no orchestration module and not each other; no cycle among module-level imports.
Imports inside functions (lazy, marked ``~``) count for the layer rules too, except the
registry's lazy ``import maml_rl.envs`` in ``maml_rl.tasks`` (it registers the built-in
families the first time an id is looked up).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {
    "maml_rl": ROOT / "maml_rl",
    "maml_rl.envs": ROOT / "envs",
    "maml_rl.agents": ROOT / "agents",
}
ORCHESTRATION = (
    "maml_rl.config",
    "maml_rl.factories",
    "maml_rl.trainer",
    "maml_rl.evaluation",
    "maml_rl.cli",
)
ALLOWED_LAZY = {("maml_rl.tasks", "maml_rl.envs")}


def modules() -> dict[str, Path]:
    """Every module of the installed namespace, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "maml_rl" and parts and parts[0] in ("envs", "agents"):
                continue
            found[name] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(known: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """``{module: {imported module: lazy?}}`` for imports of ``maml_rl`` modules."""
    graph: dict[str, dict[str, bool]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        edges: dict[str, bool] = {}
        top_level = {id(n) for n in tree.body}
        guarded = {
            id(n)
            for node in tree.body
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{a.name}" for a in node.names] or [base]
            for target in targets:
                dep = _resolve(target, known)
                if dep is None or dep == name:
                    continue
                lazy = id(node) not in top_level
                edges[dep] = edges.get(dep, True) and lazy
        graph[name] = edges
    return graph


def layer(module: str) -> str:
    if module == "maml_rl.envs" or module.startswith("maml_rl.envs."):
        return "envs"
    if module == "maml_rl.agents" or module.startswith("maml_rl.agents."):
        return "agents"
    if any(module == o or module.startswith(o + ".") for o in ORCHESTRATION):
        return "orchestration"
    return "core"


def violations(graph: dict[str, dict[str, bool]]) -> list[str]:
    bad: list[str] = []
    for src, edges in graph.items():
        for dst in edges:
            if (src, dst) in ALLOWED_LAZY:
                continue
            a, b = layer(src), layer(dst)
            if a == "core" and b != "core":
                bad.append(f"core module {src} imports {b} module {dst}")
            elif a in ("envs", "agents") and b not in ("core", a):
                bad.append(f"{a} module {src} imports {b} module {dst}")
    # cycles among module-level imports (a package's __init__ importing its own
    # submodules is how a package re-exports; edges into a parent package are not)
    eager = {
        s: {d for d, lazy in e.items() if not lazy and not s.startswith(d + ".")}
        for s, e in graph.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(eager.get(node, ())):
            if state.get(nxt) == 1:
                bad.append("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(eager):
        if node not in state:
            visit(node)
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a rule is violated")
    args = parser.parse_args(argv)
    known = modules()
    graph = imports(known)
    for name in sorted(graph, key=lambda m: (layer(m), m)):
        deps = ", ".join(
            f"{'~' if graph[name][d] else ''}{d.removeprefix('maml_rl.')}"
            for d in sorted(graph[name])
        )
        print(f"[{layer(name)}] {name} -> {deps or '-'}")
    bad = violations(graph)
    print(f"{len(bad)} violation(s)")
    for line in bad:
        print("  " + line)
    return 1 if (bad and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
