"""Peak training memory, step time, graph size and build time of DenseNets: naive, efficient=True
and efficient='shared', from DenseNet-BC-40 to the paper's deepest models.

    python -m benchmarks.memory                        # DenseNet-BC k=12, b64, 32x32, L=40..250
    python -m benchmarks.memory --depths 100 --wide 250:24 190:40 --imagenet 264:48
    python -m benchmarks.memory --budget_gb 12         # deepest BC-k12 and largest batch in 12 GiB
    python -m benchmarks.memory --quick                # tiny sizes: a check of the code

Every measurement runs in a fresh process of its own (nothing one leaves behind adds to the
next, and each reports its own peak resident memory): it builds one Nesterov-SGD training step
(timing the construction, gradients included, and counting its ops), runs a warm-up step, then
--steps timed steps, the first one's peak read from TensorFlow's BFC allocator statistics
(`benchmarks.peak`; the bytes allocated on top of the variables and the input batch); time is
their median (--steps 0: one step, no warm-up, read the same way: for steps of minutes). A step
that does not fit the allocator's limit (--limit_gb, or --budget_gb for the search) is reported as
such. It prints markdown tables, the log-log slope of each mode's peak over depth (2 is
quadratic, 1 linear), and writes memory.csv and memory.png to --out.
"""
import argparse
import contextlib
import csv
import dataclasses
import multiprocessing
import os
import resource
import signal
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

MIB = 2.0 ** 20
MODES = ('naive', 'efficient', 'shared')
SETTINGS = {'naive': False, 'efficient': True, 'shared': 'shared'}
NOT_ASKED = dict(status='not asked for (--modes)')
# --xla: off; plain, XLA auto-clustering as a user turns it on
# (`models.compat.enable_auto_clustering`, as train.py --xla True does); layers, the same with
# `models.xla.cluster_by_layer`'s marks, which keep the recomputation's saving (train.py --xla
# True); backward, the backward pass clustered layer by layer too, every cluster compiled
# (train.py --xla True in channels_first on a CPU).
XLA = ('off', 'plain', 'layers', 'backward')
CSV_FIELDS = ('model', 'depth', 'growth_rate', 'setting', 'batch', 'image_size', 'xla', 'status',
              'params', 'variables_mib', 'peak_mib', 'step_s', 'build_s', 'ops', 'rss_mib',
              'tensorflow', 'per_image_mib')
QUICK = dict(depths=[16, 28, 40], batch_size=8, image_size=16, steps=1, wide=['16:24'],
             imagenet=[], partial=['every=2'], partial_depth=28, keras=1, keras_batch=2,
             keras_image_size=32, budget_depth=16, budget_from=16, budget_max_depth=40,
             budget_max_batch=16)


@dataclasses.dataclass(frozen=True)
class Case(object):
    """One measurement: a model ('densenet_bc', 'densenet_imagenet' with `depth` layers, or
    'keras_densenet121'), its growth rate, `setting` (a mode of MODES or a partial setting such
    as 'every=2'), batch, input size, and how many steps to time after a warm-up step (the
    first one's peak is read; 0: no warm-up, the one step is timed and its peak read, one-off
    costs included)."""
    model: str
    depth: int
    growth_rate: int
    setting: str
    batch: int
    image_size: int
    steps: int
    classes: int = 10
    xla: str = 'off'


def measure(case, limit_gb):
    """The measurement dict of `case` (see `_measure`), in a fresh process whose CPU allocator
    is a BFC allocator holding at most `limit_gb` GiB; its status says 'out of memory' where
    the step did not fit (or the kernel killed the process), else 'ok'."""
    from benchmarks import peak
    context = multiprocessing.get_context('spawn')
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_measure_in_child, args=(sender, case))
    with _environment(**{peak.BFC_VARIABLE: 'true',
                         peak.LIMIT_VARIABLE: str(int(limit_gb * 1024))}):
        child.start()  # a spawned child takes the environment as it is now
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:  # killed (the kernel's OOM killer) or crashed before it could report
        child.join()  # exitcode is None until then
        result = dict(status='out of memory' if child.exitcode == -signal.SIGKILL else
                      'failed (exit code %s)' % child.exitcode)
    child.join()
    return result


@contextlib.contextmanager
def _environment(**variables):
    """os.environ with `variables` set, for the duration (this process's TensorFlow, already
    started, is not affected; the processes started meanwhile are)."""
    saved = dict((name, os.environ.get(name)) for name in variables)
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _measure_in_child(sender, case):
    from models.compat import tf
    try:
        result = _measure(case)
    except tf.errors.ResourceExhaustedError:
        result = dict(status='out of memory')
    except Exception as e:  # reported in the table, not a crash of the whole run
        result = dict(status='failed: %s: %s' % (type(e).__name__, str(e).splitlines()[0]))
    sender.send(result)


def _measure(case):
    """dict(params, variables_mib, peak_mib, step_s, build_s, ops, rss_mib, status,
    tensorflow) of one training step of `case`, in this process."""
    import models
    from benchmarks import peak
    from benchmarks.peer_methods import PEERS
    from models import compat
    from models.compat import tf
    peer = PEERS.get(case.setting)  # a peer's setting: the naive graph, the peer's gradients
    if case.xla != 'off':  # before the first session, which reads the switches
        compat.enable_auto_clustering(every_op=case.xla == 'backward')
    with tf.Graph().as_default() as graph:
        rng = np.random.RandomState(0)
        batch = {}  # in local variables, set by a feed: in memory before any step, as weights are
        images = _local(rng.uniform(0, 1, (case.batch, case.image_size, case.image_size, 3))
                        .astype(np.float32), batch)
        labels = _local(rng.randint(0, case.classes, case.batch).astype(np.int32), batch)
        start, inputs = time.time(), len(graph.get_operations())
        efficient = False if peer else SETTINGS.get(case.setting, case.setting)
        loss = tf.losses.sparse_softmax_cross_entropy(labels, _logits(case, images, efficient))
        train = train_step(loss, peer)
        if case.xla in ('layers', 'backward'):
            from models.xla import cluster_by_layer
            cluster_by_layer(graph, backward=case.xla == 'backward')
        build_s, ops = time.time() - start, len(graph.get_operations()) - inputs
        params = models.count_params(tf.trainable_variables())
        variables = sum(v.shape.num_elements() * v.dtype.base_dtype.size
                        for v in tf.global_variables())
        stats = peak.AllocatorStats()
        with tf.Session(config=peer.session_config() if peer else None) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(tf.local_variables_initializer(), feed_dict=batch)
            if case.steps:
                sess.run(train)  # warm-up: one-off allocations
            times = []
            for step in range(max(1, case.steps)):  # the first one's peak is read (and timed)
                start = time.time()
                if step:
                    sess.run(train)
                else:
                    peak_bytes = peak.peak_bytes(sess, train, stats)
                times.append(time.time() - start)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return dict(params=params, variables_mib=variables / MIB, status='ok', ops=ops,
                peak_mib=peak_bytes / MIB, build_s=build_s, step_s=float(np.median(times)),
                rss_mib=rss_mib, tensorflow=compat.VERSION)


def train_step(loss, peer=None):
    """The benchmarks' training step of `loss`: Nesterov SGD (its gradients as `peer`, a
    `benchmarks.peer_methods.Peer`, computes them, if given) grouped with the batch-norm
    updates, as in utils.optimizer.training_graph."""
    from models.compat import tf
    optimizer = tf.train.MomentumOptimizer(0.1, 0.9, use_nesterov=True)
    apply = peer.minimize(optimizer, loss) if peer else optimizer.minimize(loss)
    return tf.group(apply, *tf.get_collection(tf.GraphKeys.UPDATE_OPS))


def _local(value, feeds):
    """A local variable holding the array `value`, its initial value fed from `feeds` (no
    constant of its size in the graph)."""
    from models.compat import tf
    placeholder = tf.placeholder(value.dtype, value.shape)
    feeds[placeholder] = value
    return tf.Variable(placeholder, trainable=False, collections=[tf.GraphKeys.LOCAL_VARIABLES])


def _logits(case, images, efficient):
    import models
    from models.compat import tf
    if case.model == 'keras_densenet121':
        tf.keras.backend.set_learning_phase(1)
        model = tf.keras.applications.DenseNet121(weights=None, input_tensor=images,
                                                  classes=case.classes)
        for update in model.updates:
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update)
        return model.layers[-1].output.op.inputs[0]  # the logits under the softmax
    setting = models.Recomputation.parse(efficient)
    if case.model == 'densenet_imagenet':
        return models.densenet_imagenet(images, case.classes, layers=case.depth,
                                        growth_rate=case.growth_rate, efficient=setting,
                                        data_format='channels_last')()
    return models.densenet_bc(images, case.classes, depth=case.depth,
                              growth_rate=case.growth_rate, efficient=setting,
                              data_format='channels_last')()


# -- the searches ------------------------------------------------------------------------------

def largest_fitting(fits, start, upper=None):
    """The largest integer n in [start, upper] with fits(n), assuming fits is monotone; 0 if none.

    Doubles n until a measurement fails (or `upper` fits), then bisects: every answer is
    measured, not estimated.
    """
    if not fits(start):
        return 0
    if upper is not None and start >= upper:
        return start
    low, high = start, start * 2 if upper is None else min(start * 2, upper)
    while fits(high):
        if high == upper:
            return high
        low, high = high, high * 2 if upper is None else min(high * 2, upper)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def largest_by_peaks(measure, points, limit, upper):
    """The largest n <= `upper` whose step's peak fits `limit` (MiB), to 5%, where `measure(n)`
    returns the peak of n or None if it does not fit, and `points` holds at least two measured
    (n, peak) pairs that fit.

    For steps too slow to double into (DenseNet-264 at 224x224): each probe extends the line
    through the two largest fitting measurements to the limit (peaks grow about linearly with
    the batch once feature maps dominate, so one probe near the answer makes the next one
    close), and bisects instead where a probe has shown that line to reach too far. Every
    answer is measured: n fits, and n + 5% does not (or n is the cap).
    """
    points = sorted(points)
    low, high = points[-1][0], upper + 1
    while high - low > _resolution(low):
        (n1, p1), (n2, p2) = points[-2:]
        slope = (p2 - p1) / float(n2 - n1)
        n = min(n2 + int((limit - p2) / slope) if slope > 0 else upper, upper)
        if n >= high:  # the line reaches past a batch that did not fit
            n = (low + high) // 2
        n = min(max(n, low + _resolution(low)), high - 1)
        peak = measure(n)
        if peak is None:
            high = n
        else:
            low, points = n, sorted(points + [(n, peak)])
    return low


def _resolution(n):
    return max(1, n // 20)


def budget(args, mode, log, run=measure):
    """(deepest DenseNet-BC k=--growth_rate at --batch_size, largest batch of
    BC---budget_depth) whose step fits an allocator capped at --budget_gb GiB, by measurement
    (`run(case, limit_gb)`); the searches stop at --budget_max_depth / --budget_max_batch."""
    def fits(depth, batch):  # a warm-up and a second step: the first may fit where the next not
        result = run(Case('densenet_bc', depth, args.growth_rate, mode, batch,
                          args.image_size, 1), args.budget_gb)
        log('  %s L=%d batch %d: %s' % (mode, depth, batch, 'fits' if result['status'] == 'ok'
                                        else result['status']))
        return result['status'] == 'ok'

    per_block = largest_fitting(lambda n: fits(6 * n + 4, args.batch_size),
                                max(1, (args.budget_from - 4) // 6),
                                args.budget_max_depth and (args.budget_max_depth - 4) // 6)
    batch = largest_fitting(lambda b: fits(args.budget_depth, b), 1, args.budget_max_batch)
    return (6 * per_block + 4 if per_block else None), batch


def loglog_slope(depths, peaks):
    """Exponent b of peak ~ depth^b, least squares over the measured depths."""
    return float(np.polyfit(np.log(depths), np.log(peaks), 1)[0])


# -- the measurements --------------------------------------------------------------------------

def series(args, log, run=measure):
    """DenseNet-BC k=--growth_rate at each of --depths in each of --modes; a mode that runs out
    of memory at one depth is not tried deeper. Returns the rows."""
    rows, gave_up = [], set()
    log(_header('L', 'params'))
    for depth in args.depths:
        results = {}
        for mode in MODES:
            case = Case('densenet_bc', depth, args.growth_rate, mode, args.batch_size,
                        args.image_size, args.steps, xla=args.xla)
            if mode not in args.modes:
                results[mode] = NOT_ASKED
            elif mode in gave_up:
                results[mode] = dict(status='not tried (ran out at a smaller depth)')
            else:
                results[mode] = run(case, args.limit_gb)
            if results[mode]['status'] == 'out of memory':
                gave_up.add(mode)
            rows.append(_row(case, results[mode]))
        log(_line('%d' % depth, results))
    for mode in MODES:
        points = [(r['depth'], r['peak_mib']) for r in rows
                  if r['setting'] == mode and r['status'] == 'ok']
        if len(points) > 1:
            log('%s: peak ~ depth^%.2f over L=%d..%d (log-log fit)' % (
                mode, loglog_slope(*zip(*points)), points[0][0], points[-1][0]))
    return rows


def wide(args, log, run=measure):
    """DenseNet-BC (L, k) of --wide ('250:24') at --batch_size in each of --modes."""
    rows = []
    log(_header('(L, k)', 'params'))
    for spec in args.wide:
        depth, growth = map(int, spec.split(':'))
        results = {}
        for mode in MODES:
            case = Case('densenet_bc', depth, growth, mode, args.batch_size, args.image_size,
                        args.steps)
            results[mode] = run(case, args.limit_gb) if mode in args.modes else NOT_ASKED
            rows.append(_row(case, results[mode]))
        log(_line('(%d, %d)' % (depth, growth), results))
    return rows


def imagenet(args, log, run=measure):
    """ImageNet DenseNets of --imagenet ('264:48', 1000 classes) at 224x224, per mode of
    --modes: the largest batch within --limit_gb (to 5%, up to --imagenet_max_batch), searched
    from batches 4 and 8 by the measured peaks (`largest_by_peaks`), each probe a measurement
    of --steps steps, and the memory each added image takes there."""
    rows = []
    for spec in args.imagenet:
        layers, growth = map(int, spec.split(':'))
        log('DenseNet-%d k=%d, 224x224, allocator limit %.3g GiB: the largest batch of each mode'
            % (layers, growth, args.limit_gb))
        for mode in args.modes:
            def case(batch, steps):
                return Case('densenet_imagenet', layers, growth, mode, batch, 224, steps,
                            classes=1000)
            measured = dict((batch, (case(batch, 1), run(case(batch, 1), args.limit_gb)))
                            for batch in (4, 8))
            if any(result['status'] != 'ok' for _, result in measured.values()):
                log('  %s: batch 4 / 8: %s' % (mode, ' / '.join(
                    result['status'] for _, result in measured.values())))
                continue
            log('  %s: batch 4: %.1f MiB, batch 8: %.1f MiB; searching from there'
                % (mode, measured[4][1]['peak_mib'], measured[8][1]['peak_mib']))

            def held(batch):  # what the allocator holds beside the variables: step and input
                probe, result = measured[batch]
                return result['peak_mib'] + batch * (probe.image_size ** 2 * 3 * 4 + 4) / MIB

            def peak(batch):
                probe = case(batch, args.steps)
                measured[batch] = (probe, run(probe, args.limit_gb))
                result = measured[batch][1]
                log('  %s batch %d: %s' % (mode, batch, 'peak %.1f MiB' % result['peak_mib']
                                           if result['status'] == 'ok' else result['status']))
                return held(batch) if result['status'] == 'ok' else None
            batch = largest_by_peaks(
                peak, [(n, held(n)) for n in (4, 8)],
                args.limit_gb * 1024 - measured[4][1]['variables_mib'], args.imagenet_max_batch)
            fitting = sorted(n for n, (_, result) in measured.items() if result['status'] == 'ok')
            below = fitting[fitting.index(batch) - 1]
            measured_case, result = measured[batch]
            result = dict(result, per_image_mib=(result['peak_mib'] - measured[below][1][
                'peak_mib']) / (batch - below))
            rows.append(_row(measured_case, result))
            log('  %s: batch %d%s, peak %s MiB (%s MiB per image at that batch, %s per image '
                'added from batch %d), %s s/step, build %s s, %s ops, RSS %s GiB' % (
                    mode, batch, ' (the --imagenet_max_batch cap)' if
                    batch == args.imagenet_max_batch else '', _f(result.get('peak_mib')),
                    _f(_per_image(result, batch)), _f(result['per_image_mib']), below,
                    _f(result.get('step_s'), 3), _f(result.get('build_s'), 0),
                    result.get('ops', '-'), _f(_gib(result.get('rss_mib')), 2)))
    return rows


def partial(args, log, run=measure):
    """Partial recomputation settings at --partial_depth, beside naive, True and shared."""
    rows, base = [], None
    log('Partial recomputation, DenseNet-BC-%d k=%d, batch %d:' % (
        args.partial_depth, args.growth_rate, args.batch_size))
    log('| efficient | peak MiB | of naive | s/step | vs naive |\n|---|---|---|---|---|')
    for setting in ['naive'] + list(args.partial) + ['efficient', 'shared']:
        case = Case('densenet_bc', args.partial_depth, args.growth_rate, setting,
                    args.batch_size, args.image_size, args.steps)
        result = run(case, args.limit_gb)
        rows.append(_row(case, result))
        base = base or result
        log('| %s | %s | %s | %s | %s |' % (setting, _f(result.get('peak_mib')),
                                           _ratio(result, base, 'peak_mib'),
                                           _f(result.get('step_s'), 3),
                                           _ratio(result, base, 'step_s')))
    return rows


def keras(args, log, run=measure):
    """Our DenseNet-121 in every mode against tf.keras.applications.DenseNet121."""
    rows, base = [], None
    log('DenseNet-121, batch %d, %dx%d, 10 classes: ours vs tf.keras.applications' % (
        args.keras_batch, args.keras_image_size, args.keras_image_size))
    log('| model | params | peak MiB | of tf.keras | s/step | vs tf.keras | build s | ops |\n'
        '|---|---|---|---|---|---|---|---|')
    for model, setting in (('keras_densenet121', 'keras'),) + tuple(
            ('densenet_imagenet', mode) for mode in MODES):
        case = Case(model, 121, 32, setting, args.keras_batch, args.keras_image_size,
                    args.steps)
        result = run(case, args.limit_gb)
        rows.append(_row(case, result))
        base = base or result
        log('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
            'tf.keras DenseNet121' if setting == 'keras' else 'ours, ' + setting,
            format(result.get('params', 0), ','), _f(result.get('peak_mib')),
            _ratio(result, base, 'peak_mib'), _f(result.get('step_s'), 3),
            _ratio(result, base, 'step_s'), _f(result.get('build_s')), result.get('ops', '-')))
    return rows


# -- tables and files --------------------------------------------------------------------------

def _header(first, second):
    cells = [first, second, 'peak MiB n / e / s', 'e/n', 's/n', 's/step n / e / s',
             'build s n / e / s', 'ops n / e / s', 'RSS GiB n / e / s']
    return '| ' + ' | '.join(cells) + ' |\n|' + '---|' * len(cells)


def _line(first, results):
    """A table row of the three modes' results (n / e / s in each cell)."""
    def modes(key, digits=1, scale=None):
        return ' / '.join(_f(scale(results[m].get(key)) if scale else results[m].get(key),
                             digits) for m in MODES)
    params = next((r['params'] for r in results.values() if 'params' in r), None)
    cells = [first, format(params, ',') if params else '-', modes('peak_mib'),
             _ratio(results['efficient'], results['naive'], 'peak_mib'),
             _ratio(results['shared'], results['naive'], 'peak_mib'), modes('step_s', 3),
             modes('build_s', 0), modes('ops', 0), modes('rss_mib', 2, _gib)]
    return '| ' + ' | '.join(cells) + ' |'


def _f(value, digits=1):
    return '-' if value is None else '%.*f' % (digits, value)


def _gib(mib):
    return None if mib is None else mib / 1024.0


def _per_image(result, batch):
    return None if result.get('peak_mib') is None else result['peak_mib'] / batch


def _ratio(result, base, key):
    if result.get(key) is None or base.get(key) is None:
        return '-'
    return '%.1f%%' % (100.0 * result[key] / base[key])


def _row(case, result):
    return dict(dataclasses.asdict(case), **result)


def write_csv(rows, path):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow(dict((k, _csv_value(row.get(k))) for k in CSV_FIELDS))


def _csv_value(value):
    return '' if value is None else '%.4g' % value if isinstance(value, float) else value


def write_plot(rows, path, title):
    """Peak memory over depth (log-log) of the DenseNet-BC series, one line per mode."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, style in zip(MODES, ('o-', 's-', 'd-')):
        points = sorted((r['depth'], r['peak_mib']) for r in rows if r['setting'] == mode and
                        r['model'] == 'densenet_bc' and r.get('peak_mib'))
        if points:
            ax.plot(*zip(*points), style, label=mode)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('depth L')
    ax.set_ylabel('peak training memory of one step (MiB)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bc_depth(value):
    """A DenseNet-BC depth: 3 blocks of (L - 4) / 6 bottleneck layers."""
    depth = int(value)
    if depth < 10 or (depth - 4) % 6:
        raise argparse.ArgumentTypeError('%r is not a DenseNet-BC depth ((L - 4) a positive '
                                         'multiple of 6: 40, 100, 250, 502, 1000, ...)' % value)
    return depth


def add_network_args(parser):
    """The DenseNet-BC series' flags: --depths, --growth_rate, --batch_size, --image_size."""
    parser.add_argument('--depths', type=bc_depth, nargs='*', default=[40, 100, 250])
    parser.add_argument('--growth_rate', type=int, default=12)
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--image_size', type=int, default=32)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_network_args(parser)
    parser.add_argument('--steps', type=int, default=3,
                        help='timed steps after a warm-up step (median reported); 0: one step, '
                        'no warm-up (one-off costs included: for steps of minutes)')
    parser.add_argument('--wide', nargs='*', default=[], metavar='L:K',
                        help='DenseNet-BC (L, k) pairs, e.g. 250:24 190:40')
    parser.add_argument('--imagenet', nargs='*', default=[], metavar='L:K',
                        help='ImageNet DenseNets at 224x224 and their largest batch, e.g. 264:48')
    parser.add_argument('--imagenet_max_batch', type=int, default=256)
    parser.add_argument('--partial', nargs='*', default=[],
                        help='partial recomputation settings to compare, e.g. every=2 blocks=2,3')
    parser.add_argument('--partial_depth', type=int, default=100)
    parser.add_argument('--keras', type=int, default=0, help='1: DenseNet-121 against tf.keras')
    parser.add_argument('--keras_batch', type=int, default=32)
    parser.add_argument('--keras_image_size', type=int, default=64)
    parser.add_argument('--limit_gb', type=float, default=_physical_gib() * 0.9,
                        help='the allocator limit of every measurement (default: 90%% of RAM)')
    parser.add_argument('--budget_gb', type=float, default=None,
                        help='the deepest BC and the largest batch whose step fits this limit')
    parser.add_argument('--budget_depth', type=int, default=100,
                        help='the BC depth whose largest batch --budget_gb finds')
    parser.add_argument('--budget_from', type=int, default=40,
                        help='the depth the --budget_gb search starts doubling from')
    parser.add_argument('--budget_max_depth', type=int, default=None)
    parser.add_argument('--budget_max_batch', type=int, default=None)
    parser.add_argument('--modes', nargs='*', default=list(MODES), choices=MODES,
                        help='the modes measured (series, --wide, --imagenet) and searched '
                        '(--budget_gb)')
    parser.add_argument('--xla', choices=XLA, default='off',
                        help='the --depths series under XLA auto-clustering: plain, or with '
                             'models.xla.cluster_by_layer (layers; backward: the backward '
                             'pass clustered too, as on a CPU in channels_first)')
    parser.add_argument('--out', default='benchmarks/results', help='CSV and PNG go here')
    parser.add_argument('--quick', action='store_true', help='tiny sizes (%s)' % QUICK)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def _physical_gib():
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2.0 ** 30


def main(argv=None, run=measure):
    args = parse_args(argv)
    from models import compat
    title = ('one Nesterov-SGD step on %s, TensorFlow %s; peak = BFC allocator bytes on top of '
             'the variables, time = %s' % (
                 'GPU' if compat.gpu_available() else 'CPU', compat.VERSION,
                 'median of %d steps after a warm-up' % args.steps if args.steps else
                 'the first step (no warm-up)'))
    print('DenseNet-BC k=%d, batch %d, %dx%d; %s%s' % (
        args.growth_rate, args.batch_size, args.image_size, args.image_size, title,
        '' if args.xla == 'off' else '; XLA %s (models.compat.enable_auto_clustering)' % args.xla))
    log = lambda line: print(line, flush=True)  # noqa: E731
    rows = []
    for section, wanted in ((series, args.depths), (wide, args.wide), (imagenet, args.imagenet),
                            (partial, args.partial), (keras, args.keras)):
        if wanted:
            rows += section(args, log, run)
            log('')
    if args.budget_gb:
        log('Within %.3g GiB of allocator (variables, momentum and the step), k=%d, %dx%d:' % (
            args.budget_gb, args.growth_rate, args.image_size, args.image_size))
        for mode in args.modes:
            depth, batch = budget(args, mode, log, run)
            log('%s: deepest DenseNet-BC at batch %d: %s; largest batch of BC-%d: %d' % (
                mode, args.batch_size, 'L=%d' % depth if depth else 'none', args.budget_depth,
                batch))
    os.makedirs(args.out, exist_ok=True)
    write_csv(rows, os.path.join(args.out, 'memory.csv'))
    write_plot(rows, os.path.join(args.out, 'memory.png'), title)
    print('wrote %s and %s' % tuple(os.path.join(args.out, n) for n in ('memory.csv',
                                                                         'memory.png')))


if __name__ == '__main__':
    main()
