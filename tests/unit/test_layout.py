"""The layout's rules, checked on the code itself: the core runs where
FiftyOne is absent, the operators use only the public SDK, and no module
imports itself back through another."""
import ast
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = REPO / "fiftyone_ncl"


def _run_without_fiftyone(code):
    """Runs ``code`` in a fresh interpreter where ``import fiftyone`` fails."""
    prelude = "import sys\nsys.modules['fiftyone'] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=REPO)


def test_every_core_module_imports_without_fiftyone():
    code = """
import importlib, pkgutil
import fiftyone_ncl.core as core
bad = []
for m in pkgutil.walk_packages(core.__path__, "fiftyone_ncl.core."):
    try:
        importlib.import_module(m.name)
    except Exception as e:
        bad.append("%s: %r" % (m.name, e))
assert "fiftyone" not in [k for k, v in sys.modules.items() if v is not None], "fiftyone got imported"
print("\\n".join(bad) or "ok")
"""
    out = _run_without_fiftyone(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok", out.stdout


def test_the_core_trains_and_scores_without_fiftyone():
    code = """
import numpy as np
from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.registry import build_method
rng = np.random.default_rng(0)
z = rng.normal(size=(64, 8)).astype(np.float32)
data = PairData(z + 0.1 * rng.normal(size=z.shape).astype(np.float32), z, np.arange(64))
scores = build_method("gmm", train_heads=True, epochs=1, embed_dim=8, hidden_dim=16, device="cpu").fit(
    data, progress=False).score(data, progress=False)
assert scores.confidence.shape == (64,)
import fiftyone_ncl.datasets.synthetic, fiftyone_ncl.bench.runner, fiftyone_ncl.bench.disentanglement
print("ok")
"""
    out = _run_without_fiftyone(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def _imports(path, package_of):
    """Absolute module names a file imports, at any depth (function-level
    imports included: a cycle they hide is still a cycle)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package_of.split(".")[: len(package_of.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out.add(base)
            out.update("%s.%s" % (base, a.name) for a in node.names)
    return out


def _modules():
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        package = ".".join(parts[:-1]) if parts[-1] != "__init__" else ".".join(parts[:-1])
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = (path, package)
    return mods


def test_no_import_cycles():
    mods = _modules()
    graph = {name: {m for m in _imports(path, package) if m in mods and m != name} for name, (path, package) in mods.items()}
    # the lazy top-level package resolves names on demand and imports nothing
    # that imports it back; every edge is an explicit import
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: %s" % ["  ->  ".join(c) for c in cycles]


def test_operators_use_only_the_public_sdk():
    import fiftyone_ncl

    public = set(fiftyone_ncl.__all__)
    for path in (REPO / "operators").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fiftyone_ncl"):
                raise AssertionError("%s imports from %s: use `import fiftyone_ncl as ncl`" % (path.name, node.module))
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name == "fiftyone_ncl" or not alias.name.startswith("fiftyone_ncl"), (
                        "%s imports %s" % (path.name, alias.name)
                    )
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ncl":
                assert node.attr in public, "%s uses ncl.%s, which is not public API" % (path.name, node.attr)
