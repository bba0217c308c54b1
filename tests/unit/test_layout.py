"""The architecture as a test: one-way imports, no cycle, short functions and modules.

Every import counts (also inside functions and under TYPE_CHECKING): a lazy import is
still a dependency. The layers: cli -> jobs (tasks, judge, speed, finetune, report) -> lm
<- models (backends and their runtimes: models/engine). Jobs reach inference only
through the protocol: outside models/ nothing imports a runtime.
"""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "lmboard"
BACKENDS = {"lmboard.models.hf", "lmboard.models.hf_load", "lmboard.models.openai_api", "lmboard.models.plugin"}
RUNTIME = "lmboard.models.engine"  # the hf backend's runtimes
COMMANDS = {"lmboard.cli.eval", "lmboard.cli.generate", "lmboard.cli.chat", "lmboard.cli.judge", "lmboard.cli.speed",
            "lmboard.cli.finetune", "lmboard.cli.board"}


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(("lmboard", *p.relative_to(PKG).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = p
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != m:
                    graph[m].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (c := visit(w)):
                return c
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state and (c := visit(v)):
            return c
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def _violations(graph, who, allowed) -> list[str]:
    return [f"{m} -> {t}" for m in graph if who(m) for t in graph[m] if not allowed(t)]


def test_imports_go_one_way():
    g = import_graph()
    base = {"lmboard", "lmboard.errors", "lmboard.registry", "lmboard.text", "lmboard.version", "lmboard.io",
            "lmboard.faults", "lmboard.peak"}  # leaf utilities everyone may use
    # the protocol depends on nothing but errors
    assert g["lmboard.lm"] <= {"lmboard.errors"}
    # the runtime knows the protocol, never a backend, a job or the CLI
    assert not _violations(g, lambda m: m.startswith(RUNTIME),
                           lambda t: t.startswith(RUNTIME) or t in base | {"lmboard.lm"})
    # outside models/ nothing imports the runtime: jobs reach inference through the protocol
    assert not _violations(g, lambda m: not m.startswith("lmboard.models"), lambda t: not t.startswith(RUNTIME))
    # backends implement the protocol (their runtimes inside models/); they import no job or command
    assert not _violations(g, lambda m: m.startswith("lmboard.models"),
                           lambda t: t.startswith("lmboard.models") or t in base | {"lmboard.lm"})
    # outside models/ nobody imports a backend module: they are found through the registry
    # (the CLI takes only spec parsing and loading from models/)
    assert not _violations(g, lambda m: not m.startswith("lmboard.models"), lambda t: t not in BACKENDS)
    # nothing but the CLI imports the CLI, and no command imports another
    assert not _violations(g, lambda m: not m.startswith("lmboard.cli") and m != "lmboard.__main__",
                           lambda t: not t.startswith("lmboard.cli"))
    assert not _violations(g, lambda m: m in COMMANDS, lambda t: t not in COMMANDS)


def test_functions_and_modules_are_short():
    long = []
    for m, p in modules().items():
        src = p.read_text()
        assert len(src.splitlines()) <= 400, f"{m}: {len(src.splitlines())} lines"
        limit = 60 if m.startswith(RUNTIME) else 80
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit:
                long.append(f"{m}:{node.name}: {node.end_lineno - node.lineno + 1} lines (limit {limit})")
    assert not long, long
