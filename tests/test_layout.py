"""The package's shape: Keras internals only in the compat module, imports at
module level only (the CLI excepted), and no import cycle between modules."""

import ast
import pathlib

import keras
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_egemma"
# The CLI, and its serve command, pick the Keras backend from their arguments
# before importing Keras; the serving modules also need the `serve` extra.
DEFERRED_IMPORTS_ALLOWED = {"keras_egemma.cli", "keras_egemma.serving.command"}

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent: runs once, in the JAX pass"
)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _package_chain(module):
    """`keras_egemma.a.b` -> the subpackage Python initialises first,
    `keras_egemma.a`. (The root package re-exports the public API: it is
    initialised before any of its modules, whichever is imported.)"""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def _imports(module, tree, known):
    """Module-level imports of keras_egemma modules, as module names."""
    found = set()
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("keras_egemma") and name in known:
                found.add(name)
                found.update(_package_chain(name))
    found.discard(module)
    found.discard("keras_egemma")
    return found


def test_keras_internals_only_in_the_compat_module():
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for name, path in _modules()
        if name != "keras_egemma._keras_compat"
        and ("keras.src" in path.read_text() or "keras_hub.src" in path.read_text())
    ]
    assert offenders == []


def test_imports_are_at_module_level():
    offenders = []
    for name, path in _modules():
        if name in DEFERRED_IMPORTS_ALLOWED:
            continue
        tree = ast.parse(path.read_text())
        top_level = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if module and module.startswith("keras_egemma"):
                    offenders.append(f"{name}:{node.lineno} imports {module}")
    assert offenders == []


def test_no_import_cycles():
    modules = dict(_modules())
    graph = {
        name: _imports(name, ast.parse(path.read_text()), modules)
        for name, path in modules.items()
    }
    cycles = []
    state = {}

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # A package importing its own submodules is how packages work.
    cycles = [c for c in cycles if not _only_package_to_submodule(c)]
    assert cycles == []


def _only_package_to_submodule(cycle):
    names = cycle.split(" -> ")
    return all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(names, names[1:]))
