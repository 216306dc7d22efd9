"""The package's layout stays as the README's map describes it: small modules and functions,
layers that only import downwards, inference that loads no training or evaluation code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cgnf_fast

PKG = Path(cgnf_fast.__file__).resolve().parent
#: Most lines a module may have, and a function (the CLI's parser tables are data and stay short too).
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def test_modules_and_functions_are_small() -> None:
    big, long = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append((name, text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append((f"{name}.{node.name}", n))
    assert big == [] and long == [], (big, long)


def _module_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The cgnf_fast modules ``name`` imports when it is imported (not inside functions, not under
    ``if TYPE_CHECKING``); ``from X import y`` counts as importing ``X.y`` when that is a module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        nodes = [node] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
        for imp in nodes:
            if isinstance(imp, ast.Import):
                targets = [a.name for a in imp.names]
            else:
                base = package.split(".")[: len(package.split(".")) - (imp.level - 1)] if imp.level else []
                mod = ".".join(base + ([imp.module] if imp.module else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in imp.names]
            for t in targets:  # importing a.b.c runs the __init__ of a.b first (the root's is running already)
                parts = t.split(".")
                out |= {".".join(parts[:k]) for k in range(2, len(parts) + 1)}
    return {t for t in out if t in modules and t != name}


def test_no_import_cycles() -> None:
    """No cycle of module-level imports (ops and space used to import each other)."""
    modules = _modules()
    graph = {n: _module_level_imports(n, p, modules) for n, p in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    # a package's __init__ importing its own submodules, which import siblings through the
    # package, is how Python packages work; only cycles that leave the package count
    real = [c for c in cycles if len({x.split(".")[1] if "." in x else x for x in c}) > 1]
    assert real == [], real


def test_lower_layers_never_import_upper_ones() -> None:
    """Each layer imports only layers below it in the README's map (module level or inside
    functions alike): ops/reference/space/nets/zc/models know nothing of sampling, training,
    evaluation or the CLI; sampling knows nothing of training or evaluation."""
    order = ["_native", "_checks", "_stats", "io", "reference", "ops", "space", "nets", "zc", "models", "sampling",
             "train", "pipeline", "evaluate", "searching", "cli"]
    rank = {n: i for i, n in enumerate(order)}
    bad = []
    for name, path in _modules().items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in rank:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                pkg = parts[:-1] if path.name != "__init__.py" else parts
                target = (pkg[: len(pkg) - (node.level - 1)] + node.module.split("."))
                if len(target) > 1 and target[1] in rank and rank[target[1]] > rank[parts[1]]:
                    bad.append((name, ".".join(target)))
    assert bad == [], bad


def test_inference_loads_no_training_or_evaluation_code() -> None:
    """``cgnf_fast.sample()`` on the shipped model imports nothing from ``train`` or ``evaluate``
    (a fresh process: what a user's script loads)."""
    code = ("import cgnf_fast, sys; cgnf_fast.sample('best', n=5); "
            "print(sorted(m for m in sys.modules if m.startswith(('cgnf_fast.train', 'cgnf_fast.evaluate', "
            "'cgnf_fast.pipeline', 'cgnf_fast.cli'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
