"""benchmarks.memory: its searches, tables, CSV and plot on stand-in measurements (in process, so
that every branch is checked fast), and one real measurement in a process of its own. The real
figures come from `make benchmark`, not from the tests."""
import csv
import os
import re

import pytest

from benchmarks.memory import (CSV_FIELDS, MODES, Case, budget, largest_by_peaks, largest_fitting,
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



def test_the_search_by_peaks_measures_its_answer_in_few_probes():
    tried = []

    def measure(law):
        def peak(n):
            tried.append(n)
            return law(n) if law(n) <= 1000 else None
        return peak

    def linear(n):  # 300 is the largest batch within 1000 MiB
        return 100 + 3.0 * n

    def piled_up(n):  # small batches: a fixed peak elsewhere in the step, slope 0.5
        return max(300 + 0.5 * n, linear(n))

    def search(law, upper=2000):
        tried[:] = []
        return largest_by_peaks(measure(law), [(4, law(4)), (8, law(8))], 1000, upper)
    assert search(linear) == 300 and tried == [300, 315]  # on its line: the answer, and 5% more
    assert search(piled_up) == 300 and len(tried) <= 8, tried  # the line from 4 and 8 misleads
    assert 300 in tried and 315 in tried and max(tried) <= 2000
    assert search(linear, upper=250) == 250 and tried == [250]  # a cap that fits: measured once
    assert search(lambda n: 100 + 110.0 * n) == 8 and tried == [9]  # nothing past the points
    assert search(lambda n: 100 + 3.0 * n if n < 200 else 2000) == 199  # a step up in the law
    assert 199 in tried and 208 in tried  # measured: 199 fits, 199 + 5% does not


def test_the_imagenet_section_finds_each_modes_largest_batch_within_the_limit(tmp_path, capsys):
    run = StandIn()  # DenseNet-264 k=48: naive 435.6 MiB per image, shared 16.5
    main(['--depths', '--imagenet', '264:48', '--limit_gb', '1', '--modes', 'naive', 'shared',
          '--out', str(tmp_path)], run=run)
    out = capsys.readouterr().out
    assert 'naive: batch 4 / 8: out of memory / out of memory' in out
    assert 'shared: batch 4: 66.0 MiB, batch 8: 132.0 MiB' in out
    # 62 is the largest batch within 1 GiB (16.5 MiB each); the search counts the input batch
    # too (0.57 MiB per 224x224 image), which the stand-in's limit does not: to 5% below
    found = re.search(r'shared: batch (\d+), peak ([\d.]+) MiB \(16\.5 MiB per image at that '
                      r'batch, 16\.5 per image added from batch (\d+)\)', out)
    batch = int(found.group(1))
    assert 59 <= batch <= 62 and float(found.group(2)) == 16.5 * batch, out
    probes = [case.batch for case in run.cases if case.setting == 'shared']
    assert probes[:2] == [4, 8] and batch in probes and len(probes) <= 5, probes
    assert int(found.group(3)) in probes and int(found.group(3)) < batch
    assert [n for n in probes if batch < n <= batch * 1.05 + 1]  # and 5% more did not fit
    assert {case.classes for case in run.cases} == {1000}
    with open(str(tmp_path / 'memory.csv')) as f:
        row = dict(zip(CSV_FIELDS, f.read().splitlines()[1].split(',')))
    assert (row['model'], row['setting'], row['batch'], row['status'], row['per_image_mib']) == (
        'densenet_imagenet', 'shared', str(batch), 'ok', '16.5')
    assert abs(float(row['peak_mib']) - 16.5 * batch) <= 0.5


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
    assert all(case.steps == 1 and case.setting == 'shared' for case in run.cases)
    capped = parse_args(['--budget_gb', '1', '--budget_max_depth', '200',
                         '--budget_max_batch', '16'])
    assert budget(capped, 'shared', print, run) == (196, 16)  # 196 = 6 x 32 + 4 <= 200
    assert re.search(r'shared L=\d+ batch 64: out of memory', capsys.readouterr().out)


@pytest.mark.slow
def test_a_real_measurement_in_a_process_of_its_own(monkeypatch):
    allocator = ('TF_CPU_ALLOCATOR_USE_BFC', 'TF_CPU_BFC_MEM_LIMIT_IN_MB')
    before = [os.environ.get(name) for name in allocator]
    result = measure(Case('densenet_bc', 16, 4, 'shared', 4, 8, 1), limit_gb=4)
    assert result['status'] == 'ok', result
    assert 0 < result['peak_mib'] < 50 and result['params'] > 1000 and result['ops'] > 100
    assert result['step_s'] > 0 and result['build_s'] > 0 and result['rss_mib'] > 100
    first = measure(Case('densenet_bc', 16, 4, 'shared', 4, 8, 0), limit_gb=4)  # no warm-up
    assert first['status'] == 'ok' and 0 < first['peak_mib'] < 50 and first['step_s'] > 0
    assert first['ops'] == result['ops']  # the training step's, the input's not counted
    # an allocator too small for the step (BC-16 b256 32x32 needs about 300 MiB): a result.
    # TF 2.15's oneDNN kernels crash (SIGSEGV, or a failed dtype check) when the capped
    # allocator refuses them on AVX-512 machines like this one; TensorFlow's own kernels
    # report the OpError the benchmark turns into this status. The search treats either as
    # "does not fit".
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '0')
    assert measure(Case('densenet_bc', 16, 4, 'naive', 256, 32, 0),
                   limit_gb=0.1)['status'] == 'out of memory'
    # the children's settings, not this process's (utils/cli.py may have set its own)
    assert [os.environ.get(name) for name in allocator] == before


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
