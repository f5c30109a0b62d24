"""benchmarks.memory: its searches, tables, CSV and plot on stand-in measurements (in process, so
that every branch is checked fast), and one real measurement in a process of its own. The real
figures come from `make benchmark`, not from the tests."""
import csv
import os
import re

import pytest

from benchmarks.memory import (CSV_FIELDS, MODES, Case, budget, largest_fitting, largest_near,
                               loglog_slope, main, measure, parse_args, series)


def test_loglog_slope_and_the_search():
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
    tried[:] = []
    assert largest_fitting(fits, 30, upper=30) == 30 and tried == [30]  # measured once



def test_the_search_from_an_estimate_measures_its_answer_in_few_steps():
    tried = []

    def fits(n):
        tried.append(n)
        return n <= 337
    for guess, most in ((320, 4), (330, 2), (337, 2), (350, 4), (400, 16), (100, 16), (1000, 16)):
        tried[:] = []
        found = largest_near(fits, guess, resolution=10)
        assert found in tried and len(tried) <= most, (guess, tried)  # near guesses cost 2-4
        assert 327 <= found <= 337 and fits(found) and not fits(found + 10), (guess, tried)
    tried[:] = []
    assert largest_near(fits, 320, resolution=10) == 330 and tried == [320, 330, 350, 340]
    assert largest_near(fits, 300, upper=310, resolution=10) == 310  # the cap fits: no further
    assert largest_near(fits, 500, upper=310, resolution=1) == 310
    assert largest_near(fits, 2000, resolution=1) == 337  # to one
    assert largest_near(lambda n: False, 5, resolution=2) == 0
    assert largest_near(lambda n: n == 1, 64, resolution=3) == 1


def test_the_imagenet_section_finds_each_modes_largest_batch_within_the_limit(tmp_path, capsys):
    run = StandIn()  # DenseNet-264 k=48: naive 435.6 MiB per image, shared 16.5
    main(['--depths', '--imagenet', '264:48', '--limit_gb', '1', '--modes', 'naive', 'shared',
          '--out', str(tmp_path)], run=run)
    out = capsys.readouterr().out
    assert 'naive: batch 4 / 8: out of memory / out of memory' in out
    assert 'shared: 16.5 MiB per image' in out and 'shared: batch 62, peak 1023.0 MiB' in out
    probes = [case.batch for case in run.cases if case.setting == 'shared']
    assert probes[:2] == [4, 8] and 62 in probes and 65 in probes and len(probes) <= 5
    assert {case.classes for case in run.cases} == {1000}
    with open(str(tmp_path / 'memory.csv')) as f:
        assert f.read().splitlines()[1].endswith(',shared,62,224,ok,264000,1,1023,2.64,26.4,'
                                                 '26400,3071,x,16.5')


class StandIn(object):
    """Measurements that follow known laws: naive memory grows as L^2, efficient as L and
    shared as L/2 (MiB, times the batch over 64); a step needing more than the limit does not
    fit. Records every case it was asked for."""

    def __init__(self):
        self.cases = []

    def __call__(self, case, limit_gb):
        self.cases.append(case)
        scale = {'naive': case.depth ** 2 / 10.0, 'efficient': case.depth * 2.0,
                 'shared': case.depth * 1.0, 'keras': 300.0}.get(case.setting, case.depth * 5.0)
        peak = scale * case.batch / 64.0 * case.growth_rate / 12.0
        if peak > limit_gb * 1024:
            return dict(status='out of memory')
        return dict(status='ok', params=case.depth * 1000, variables_mib=1.0, peak_mib=peak,
                    step_s=case.depth / 100.0 if case.steps else None, build_s=case.depth / 10.0,
                    ops=case.depth * 100, rss_mib=2048.0 + peak, tensorflow='x')


def test_tables_csv_and_plot_follow_the_measurements(tmp_path, capsys):
    run = StandIn()
    out = str(tmp_path / 'results')
    main(['--depths', '40', '100', '250', '--wide', '250:24', '--partial', 'every=2',
          '--keras', '1', '--limit_gb', '4', '--out', out], run=run)
    printed = capsys.readouterr().out
    # naive needs 6250 MiB at L=250 (> 4 GiB): not fitting is a result, and deeper is not tried
    assert re.search(r'\| 250 \| 250,000 \| - / 500\.0 / 250\.0 \| - \| - \|', printed), printed
    assert re.search(r'efficient: peak ~ depth\^1\.00 over L=40\.\.250', printed), printed
    assert re.search(r'naive: peak ~ depth\^2\.00 over L=40\.\.100', printed), printed
    assert re.search(r'\| 100 \| 100,000 \| 1000\.0 / 200\.0 / 100\.0 \| 20\.0% \| 10\.0% \|',
                     printed), printed
    with open(os.path.join(out, 'memory.csv')) as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_FIELDS
        rows = list(reader)
    statuses = {(r['depth'], r['growth_rate'], r['setting']): r['status'] for r in rows}
    assert statuses['250', '12', 'naive'] == 'out of memory'
    assert statuses['250', '24', 'shared'] == 'ok' and statuses['100', '12', 'every=2'] == 'ok'
    assert {r['setting'] for r in rows if r['depth'] == '121'} == {'keras'} | set(MODES)
    assert float([r for r in rows if r['depth'] == '100' and r['setting'] == 'shared'][0][
        'peak_mib']) == 100.0
    with open(os.path.join(out, 'memory.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert all(case.steps == 3 for case in run.cases)


def test_the_budget_search_measures_at_the_limit_and_stops_at_its_caps(capsys):
    run = StandIn()
    args = parse_args(['--budget_gb', '1', '--budget_depth', '100', '--budget_from', '40'])
    # shared: L MiB at batch 64 -> deepest 6n + 4 <= 1024; BC-100 fits batch 655 (100 b / 64)
    assert budget(args, 'shared', print, run) == (1024, 655)
    assert all(case.steps == 0 and case.setting == 'shared' for case in run.cases)
    capped = parse_args(['--budget_gb', '1', '--budget_max_depth', '200',
                         '--budget_max_batch', '16'])
    assert budget(capped, 'shared', print, run) == (196, 16)  # 196 = 6 x 32 + 4 <= 200
    assert re.search(r'shared L=\d+ batch 64: out of memory', capsys.readouterr().out)


@pytest.mark.slow
def test_a_real_measurement_in_a_process_of_its_own():
    result = measure(Case('densenet_bc', 16, 4, 'shared', 4, 8, 1), limit_gb=4)
    assert result['status'] == 'ok', result
    assert 0 < result['peak_mib'] < 50 and result['params'] > 1000 and result['ops'] > 100
    assert result['step_s'] > 0 and result['build_s'] > 0 and result['rss_mib'] > 100
    # an allocator too small for the step (BC-16 b256 32x32 needs about 300 MiB): a result
    assert measure(Case('densenet_bc', 16, 4, 'naive', 256, 32, 0),
                   limit_gb=0.1)['status'] == 'out of memory'
    assert 'TF_CPU_ALLOCATOR_USE_BFC' not in os.environ  # the children's, not this process's


def test_depths_are_checked_and_modes_chosen(capsys, tmp_path):
    with pytest.raises(SystemExit):
        parse_args(['--depths', '500'])
    assert "'500' is not a DenseNet-BC depth" in capsys.readouterr().err
    run = StandIn()
    args = parse_args(['--depths', '40', '502', '--modes', 'shared'])
    rows = series(args, lambda line: None, run=run)
    assert [(r['depth'], r['setting']) for r in rows if r['status'] == 'ok'] == [
        (40, 'shared'), (502, 'shared')]
    assert {r['status'] for r in rows if r['setting'] != 'shared'} == {'not asked for (--modes)'}
    run = StandIn()
    main(['--depths', '--wide', '250:24', '--imagenet', '264:48', '--imagenet_max_batch', '4',
          '--modes', 'efficient', 'shared', '--out', str(tmp_path)], run=run)
    assert {case.setting for case in run.cases} == {'efficient', 'shared'}
