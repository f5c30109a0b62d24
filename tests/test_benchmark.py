"""benchmarks.memory --quick: runs end to end and its outputs are consistent (not the targets)."""
import csv
import os
import re
import subprocess
import sys

import pytest

from benchmarks.memory import CSV_FIELDS, QUICK, largest_fitting, loglog_slope

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_loglog_slope_and_the_budget_search():
    depths = [40, 100, 160]
    assert abs(loglog_slope(depths, [3 * d ** 2 for d in depths]) - 2.0) < 1e-9
    assert abs(loglog_slope(depths, [5 * d for d in depths]) - 1.0) < 1e-9
    tried = []

    def fits(n):
        tried.append(n)
        return n <= 37
    assert largest_fitting(fits, 1) == 37
    assert len(tried) < 15  # doubling then bisection, not a scan
    assert largest_fitting(lambda n: False, 1) == 0
    tried[:] = []
    assert largest_fitting(fits, 1, upper=20) == 20 and max(tried) == 20  # a cap is never passed
    assert largest_fitting(fits, 1, upper=50) == 37 and max(tried) == 50


@pytest.mark.slow
def test_quick_benchmark_writes_a_consistent_csv_and_a_png(tmp_path):
    out = str(tmp_path / 'results')
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.memory', '--quick', '--out', out,
                           '--budget_gb', '0.07', '--budget_depth', '16'], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, 'memory.csv')) as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_FIELDS
        rows = list(reader)
    bc = {(int(r['depth']), r['setting']): r for r in rows if r['model'] == 'densenet_bc'}
    for depth in QUICK['depths']:
        assert all((depth, s) in bc for s in ('naive', 'efficient', 'shared'))
    deepest = max(QUICK['depths'])
    assert float(bc[deepest, 'efficient']['peak_mib']) < float(bc[deepest, 'naive']['peak_mib'])
    assert float(bc[deepest, 'shared']['peak_mib']) < float(bc[deepest, 'efficient']['peak_mib'])
    params = [int(bc[d, 'naive']['params']) for d in QUICK['depths']]
    assert params == sorted(params) and len(set(params)) == len(params)
    for setting in ('every=2', 'every=4', 'blocks=2,3'):
        assert (QUICK['partial_depth'], setting) in bc
    keras = [r for r in rows if r['model'] == 'keras_densenet121']
    ours = [r for r in rows if r['model'] == 'densenet121']
    assert len(keras) == 1 and len(ours) == 3
    assert {r['params'] for r in ours} == {keras[0]['params']}  # the same network
    assert all(float(r['step_s']) > 0 and float(r['build_s']) > 0 for r in rows)
    with open(os.path.join(out, 'memory.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert re.search(r'naive: peak ~ depth\^[\d.]+', proc.stdout), proc.stdout
    assert re.search(r'efficient: deepest DenseNet-BC at batch 8: (>= )?(L=\d+|none); largest '
                     r'batch for BC-16: (>= )?\d+', proc.stdout), proc.stdout
    # the quick preset caps the searches: no graph deeper than QUICK['budget_max_depth']
    tried = [int(d) for d in re.findall(r'  L=(\d+) batch \d+: ', proc.stdout)]
    assert tried and max(tried) <= QUICK['budget_max_depth']
