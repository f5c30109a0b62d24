"""Every backticked name or path of ours in the docs and the code resolves: a dotted name
(`models.xla.cluster_by_layer`, `utils.config.TrainConfig.total_steps`) to a module and what it
defines, a path (`benchmarks/README.md`, `docs/`) to a file or directory. Read from the source
(no module is imported), so a name that only one stack can import is checked on every stack."""
import ast
import glob
import os
import re

import pytest

from conftest import ROOT

PACKAGES = ('models', 'utils', 'benchmarks', 'tests')
DIRECTORIES = PACKAGES + ('docs', 'pretrained', '.ci')
_SPAN = re.compile(r'`([^`\n]+)`')
_DOTTED = re.compile(r'(?<![\w./-])((?:%s)(?:\.[A-Za-z_]\w*)+)' % '|'.join(PACKAGES))
_PATH = re.compile(r'(?<![\w./-])((?:%s)/[\w./-]*)' % '|'.join(re.escape(d) for d in DIRECTORIES))
_FILE_SUFFIXES = ('.py', '.md', '.txt', '.csv', '.png', '.json', '.sh', '.cfg')


def _documents():
    """The .md files of the project and the .py files of its packages and entry points."""
    found = glob.glob(os.path.join(ROOT, '*.md')) + glob.glob(os.path.join(ROOT, '*.py'))
    for directory in DIRECTORIES:
        for where, dirs, files in os.walk(os.path.join(ROOT, directory)):
            dirs[:] = [d for d in dirs if d not in ('results', '__pycache__')]
            found += [os.path.join(where, f) for f in files if f.endswith(('.py', '.md'))]
    return sorted(found)


def _references(path):
    """(line number, kind, text) of each name or path of ours in backticks in `path`."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        for span in _SPAN.findall(line):
            if '*' in span or '{' in span or '<' in span:  # a pattern, not a name
                continue
            for name in _DOTTED.findall(span):
                if not name.endswith(_FILE_SUFFIXES):
                    yield number, 'name', name.rstrip('.')
            for name in _PATH.findall(span):
                yield number, 'path', name.rstrip('.')


class _Source(object):
    """The names a module's source defines: top level, and inside its classes."""

    def __init__(self, path):
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read())
        self.names, self.classes = set(), {}
        for node in tree.body:
            self.names |= _defined(node)
            if isinstance(node, ast.ClassDef):
                members = set()
                for item in node.body:
                    members |= _defined(item)
                    for sub in ast.walk(item):  # self.x = ... in its methods
                        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                            members.add(sub.attr)
                self.classes[node.name] = members


def _defined(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split('.')[0] for a in node.names}
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, (ast.If, ast.Try, ast.With)):
        names = set()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                names |= _defined(child)
        for handler in getattr(node, 'handlers', []):
            for child in handler.body:
                names |= _defined(child)
        return names
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _module_file(parts):
    """The file of module `parts` ('utils', 'data') or None."""
    base = os.path.join(ROOT, *parts)
    for candidate in (base + '.py', os.path.join(base, '__init__.py')):
        if os.path.isfile(candidate):
            return candidate
    return None


def resolves(name):
    """Whether dotted `name` is a module of ours, or a name its longest module defines."""
    parts = name.split('.')
    for cut in range(len(parts), 0, -1):
        path = _module_file(parts[:cut])
        if path is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        source = _Source(path)
        if rest[0] not in source.names:
            # a submodule not imported by the package's __init__ is still a module of ours
            return False
        if len(rest) == 1:
            return True
        return rest[0] in source.classes and rest[1] in source.classes[rest[0]] and \
            len(rest) == 2
    return False


@pytest.mark.parametrize('document', _documents(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_backticked_name_and_path_resolves(document):
    stale = []
    for number, kind, text in _references(document):
        ok = resolves(text) if kind == 'name' else os.path.exists(os.path.join(ROOT, text))
        if not ok:
            stale.append('%s:%d: %s' % (os.path.relpath(document, ROOT), number, text))
    assert not stale, '\n'.join(stale)


def test_the_checker_catches_a_stale_name_and_a_stale_path():
    assert resolves('models.xla.cluster_by_layer') and resolves('utils.config.TrainConfig')
    assert resolves('utils.config.TrainConfig.total_steps') and resolves('utils.data')
    assert not resolves('utils.optimizer.train_step') and not resolves('models.nothing')
    assert not resolves('utils.config.TrainConfig.no_such_method')
    assert list(_references(os.path.join(ROOT, 'README.md')))
    assert not os.path.exists(os.path.join(ROOT, 'docs/no_such.md'))


_FIGURE = re.compile(r'(?<![\w.^])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)(?![\d.])'
                     r'(?![A-Za-wyz_])')  # 1.03x is a figure, 1.15.5 and 3.9-3.11 are not


def _figures(text):
    """(text, value, decimals) of each figure in `text`: a number with a decimal point or
    thousands separators (not a flag value, a depth or a size in GiB)."""
    for token in _FIGURE.findall(text):
        yield token, float(token.replace(',', '')), len(token.partition('.')[2])


def _between(text, start, end):
    return text[text.index(start):text.index(end, text.index(start))]


def test_the_readmes_benchmark_figures_are_quoted_from_benchmarks_readme():
    """One home per figure: each one in README.md's Performance table, its peers table and its
    "On GPUs" paragraph is a figure of benchmarks/README.md, as it reads there or rounded."""
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    with open(os.path.join(ROOT, 'benchmarks', 'README.md'), encoding='utf-8') as f:
        home = [value for _, value, _ in _figures(f.read())]
    quoted = (_between(readme, '## Performance', '```') +
              _between(readme, "**Beside TF1's own tools.**", '```') +
              _between(readme, '**On GPUs.**', '\n\n'))
    figures = list(_figures(quoted))
    assert len(figures) > 20
    unsourced = [token for token, value, decimals in figures
                 if not any(round(h, decimals) == value for h in home)]
    assert not unsourced, unsourced
