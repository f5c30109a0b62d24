"""The code base's shape, kept true by a check instead of prose: short utilities and functions,
models that import nothing of utils, and no import cycles."""
import ast
import os

from conftest import ROOT

PACKAGES = ('models', 'utils', 'benchmarks')
ENTRY_POINTS = ('train.py', 'eval.py', 'export.py')


def _sources():
    """{module name: (path, parsed tree)} of the project's code outside tests."""
    found = {}
    for package in PACKAGES:
        for directory, _, names in os.walk(os.path.join(ROOT, package)):
            for name in names:
                if name.endswith('.py'):
                    path = os.path.join(directory, name)
                    module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                    found[module[:-len('.__init__')] if module.endswith('__init__') else
                          module] = path
    found.update((name[:-3], os.path.join(ROOT, name)) for name in ENTRY_POINTS)
    trees = {}
    for module, path in found.items():
        with open(path) as f:
            trees[module] = (path, ast.parse(f.read(), path))
    return trees


def _imports(module, tree, known):
    """The project modules `module` imports, at its top or inside functions."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + ['%s.%s' % (node.module, a.name) for a in node.names]
        else:
            continue
        imported.update(n for n in names if n in known and n != module)
    return imported


def test_utilities_and_functions_are_short():
    for module, (path, tree) in _sources().items():
        if module.startswith('utils'):
            with open(path) as f:
                assert len(f.readlines()) <= 300, path
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert _lines(node) <= 60, '%s: %s' % (path, node.name)


def _lines(function):
    """A function's length in lines (Python 3.7's ast has no end_lineno: there, up to its last
    statement's line)."""
    end = getattr(function, 'end_lineno', None) or max(
        getattr(node, 'lineno', 0) for node in ast.walk(function))
    return end - function.lineno + 1


def test_models_import_nothing_of_utils_and_nothing_imports_in_a_cycle():
    sources = _sources()
    graph = dict((m, _imports(m, tree, sources)) for m, (_, tree) in sources.items())
    for module, imported in graph.items():
        if module.startswith('models'):
            assert not [m for m in imported if m.startswith('utils')], module
    # A module's own package __init__ importing it is not a cycle of design: drop those edges.
    for module in graph:
        graph[module] = set(m for m in graph[module] if not module.startswith(m + '.'))
    visiting, done = [], set()

    def visit(module):
        assert module not in visiting, 'import cycle: ' + ' -> '.join(
            visiting[visiting.index(module):] + [module])
        if module in done:
            return
        visiting.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        visiting.pop()
        done.add(module)
    for module in sorted(graph):
        visit(module)
