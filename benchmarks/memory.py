"""Peak training memory, step time and graph build time versus depth: naive, efficient (True),
shared, partial recomputation, tf.keras.

    python -m benchmarks.memory                       # DenseNet-BC k=12, L=40..280, batch 64, 32x32
    python -m benchmarks.memory --quick               # tiny sizes, about a minute
    python -m benchmarks.memory --budget_gb 2         # deepest BC and largest batch within 2 GB

For each depth it builds one training step (Nesterov SGD) naive, efficient=True and
efficient='shared' (timing the graph construction, gradients included), warms up, replays a
traced step's allocation records for the peak bytes the step allocates on top of the variables
(utils.memory, on CPU or GPU), and times the median of --steps untraced steps. It
writes memory.csv and memory.png to --out, prints a table and the log-log slope of each mode's
peak over depth (2 is quadratic, 1 linear), then partial-recomputation settings at one depth and
our DenseNet-121 against tf.keras.applications.DenseNet121 at the same batch and input size.
"""
import argparse
import csv
import multiprocessing
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import models  # noqa: E402
from models import compat  # noqa: E402
from models.compat import tf  # noqa: E402
from utils import memory  # noqa: E402

MIB = 2.0 ** 20
CSV_FIELDS = ('model', 'depth', 'setting', 'batch', 'image_size', 'params', 'variables_mib',
              'peak_mib', 'step_s', 'build_s', 'tensorflow')
SETTINGS = ((False, 'naive'), (True, 'efficient'), ('shared', 'shared'))
BC_HEADER = ('depth', 'params', 'naive MiB', 'efficient MiB', 'shared MiB', 'efficient/naive',
             'shared/naive', 'naive s/step', 'efficient s/step', 'shared s/step',
             'build s (naive/eff./shared)')
QUICK = dict(depths=[16, 28, 40], batch_size=8, image_size=16, steps=2, partial_depth=28,
             keras_batch=2, keras_image_size=32, budget_max_depth=28, budget_max_batch=16)


def _densenet_bc(depth, growth_rate, setting):
    def build(images, classes):
        return models.densenet_bc(images, classes, depth=depth, growth_rate=growth_rate,
                                  efficient=setting, data_format='channels_last')()
    return build


def _densenet121(setting):
    def build(images, classes):
        return models.densenet121(images, classes, efficient=setting,
                                  data_format='channels_last')()
    return build


def _keras_densenet121(images, classes):
    """tf.keras.applications' DenseNet-121 as users would train it; returns its logits."""
    tf.keras.backend.set_learning_phase(1)
    model = tf.keras.applications.DenseNet121(weights=None, input_tensor=images, classes=classes)
    for update in model.updates:
        tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update)
    return model.layers[-1].output.op.inputs[0]  # the logits under the classifier's softmax


def measure(build, batch_size, image_size, steps, classes=10):
    """dict(params, variables_mib, peak_mib, step_s, build_s) of one training step of
    `build`'s model; build_s is the graph construction, gradients and optimizer included.

    `steps=0` skips timing (step_s is None): the budget search only needs the peak. Each
    measurement runs in a child process of its own (forked: `build` may be a closure), so that
    nothing one leaves behind (graphs, sessions, freed memory the process keeps) adds to the
    next: in one process, the naive BC-220 step after BC-160's three settings ran out of 24 GiB.
    """
    context = multiprocessing.get_context('fork')
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_measure_in_child,
                            args=(sender, build, batch_size, image_size, steps, classes))
    child.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = None
    child.join()
    if not isinstance(result, dict):
        raise RuntimeError('the measurement process %s (exit code %s)' % (
            'failed: %s' % result if result else 'died, out of memory?', child.exitcode))
    return result


def _measure_in_child(sender, *args):
    try:
        sender.send(_measure(*args))
    except Exception as e:  # reported by the parent
        sender.send('%s: %s' % (type(e).__name__, e))


def _measure(build, batch_size, image_size, steps, classes):
    with tf.Graph().as_default():
        rng = np.random.RandomState(0)
        images = tf.constant(rng.uniform(0, 1, (batch_size, image_size, image_size, 3))
                             .astype(np.float32))
        labels = tf.constant(rng.randint(0, classes, batch_size).astype(np.int32))
        start = time.time()
        loss = tf.losses.sparse_softmax_cross_entropy(labels, build(images, classes))
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train = tf.train.MomentumOptimizer(0.1, 0.9, use_nesterov=True).minimize(loss)
        build_s = time.time() - start
        params = models.count_params(tf.trainable_variables())
        variables = sum(v.shape.num_elements() * v.dtype.base_dtype.size
                        for v in tf.global_variables())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(train)  # warm-up: one-off allocations and autotuning
            peak = memory.peak_bytes(sess, train)
            times = []
            for _ in range(steps):
                start = time.time()
                sess.run(train)
                times.append(time.time() - start)
    tf.keras.backend.clear_session()
    return dict(params=params, variables_mib=variables / MIB, peak_mib=peak / MIB,
                step_s=float(np.median(times)) if times else None, build_s=build_s)


def loglog_slope(depths, peaks):
    """Exponent b of peak ~ depth^b, least squares over the measured depths."""
    return float(np.polyfit(np.log(depths), np.log(peaks), 1)[0])


def largest_fitting(fits, start, upper=None):
    """The largest integer n in [start, upper] with fits(n), assuming fits is monotone; 0 if none.

    Doubles n until a measurement fails (or `upper` fits), then bisects: every answer is
    measured, not estimated.
    """
    if not fits(start):
        return 0
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


def budget(gb, growth_rate, batch_size, image_size, model_depth, setting, log,
           max_depth=None, max_batch=None):
    """(deepest DenseNet-BC at `batch_size`, largest batch of BC-`model_depth`) whose step
    (variables, optimizer slots and peak allocations) fits in `gb` GiB, by measurement.
    The search stops at `max_depth` / `max_batch` when given (the answer is then that cap)."""
    limit = gb * 1024.0

    def total_mib(build, batch):
        result = measure(build, batch, image_size, steps=0)
        return result['variables_mib'] + result['peak_mib']

    def depth_fits(n):  # n layers per block: depth 6n + 4
        used = total_mib(_densenet_bc(6 * n + 4, growth_rate, setting), batch_size)
        log('  L=%d batch %d: %.1f MiB %s' % (6 * n + 4, batch_size, used,
                                              'fits' if used <= limit else 'too big'))
        return used <= limit

    def batch_fits(batch):
        used = total_mib(_densenet_bc(model_depth, growth_rate, setting), batch)
        log('  L=%d batch %d: %.1f MiB %s' % (model_depth, batch, used,
                                              'fits' if used <= limit else 'too big'))
        return used <= limit

    n = largest_fitting(depth_fits, 1, max_depth and (max_depth - 4) // 6)
    return (6 * n + 4 if n else None), largest_fitting(batch_fits, 1, max_batch)


def _setting_name(setting):
    return str(models.Recomputation.parse(setting))


def _write_plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    bc = [r for r in rows if r['model'] == 'densenet_bc']
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for setting, style in (('naive', 'o-'), ('efficient', 's-'), ('shared', 'd-')):
        points = sorted((r['depth'], r['params'], r['peak_mib']) for r in bc
                        if r['setting'] == setting)
        if not points:
            continue
        depths, params, peaks = zip(*points)
        axes[0].plot(depths, peaks, style, label=setting)
        axes[1].plot(np.array(params) / 1e6, peaks, style, label=setting)
    for r in bc:
        if r['setting'] not in ('naive', 'efficient', 'shared'):
            axes[0].plot([r['depth']], [r['peak_mib']], 'x', label=r['setting'])
    batch, size = bc[0]['batch'], bc[0]['image_size']
    axes[0].set_xlabel('depth L')
    axes[1].set_xlabel('parameters (millions)')
    for ax in axes:
        ax.set_ylabel('peak training memory (MiB)')
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle('DenseNet-BC k=%s, batch %d, %dx%d: one training step, TensorFlow %s' % (
        bc[0].get('growth_rate', 12), batch, size, size, compat.VERSION))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _row(model, depth, setting, batch, image_size, result):
    return dict(model=model, depth=depth, setting=setting, batch=batch, image_size=image_size,
                tensorflow=compat.VERSION, **result)


def _print_table(header, lines):
    """Markdown rows, after the header unless it is None (rows printed as they are measured)."""
    if header:
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '---|' * len(header))
    for line in lines:
        print('| ' + ' | '.join(line) + ' |', flush=True)


def _fmt_time(seconds):
    return '%.3f' % seconds if seconds is not None else '-'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--depths', type=int, nargs='+', default=[40, 100, 160, 220, 280])
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--growth_rate', type=int, default=12)
    parser.add_argument('--image_size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=5, help='timed steps (median reported)')
    parser.add_argument('--partial', nargs='*', default=['every=2', 'every=4', 'blocks=2,3'],
                        help='partial recomputation settings to compare at --partial_depth')
    parser.add_argument('--partial_depth', type=int, default=100)
    parser.add_argument('--keras', type=int, default=1, help='0 skips the tf.keras comparison')
    parser.add_argument('--keras_batch', type=int, default=32)
    parser.add_argument('--keras_image_size', type=int, default=64)
    parser.add_argument('--budget_gb', type=float, default=None,
                        help='also find the deepest BC and the largest batch fitting this size')
    parser.add_argument('--budget_depth', type=int, default=100,
                        help='the BC depth whose largest batch --budget_gb finds')
    parser.add_argument('--budget_max_depth', type=int, default=None,
                        help='stop the depth search here (reported as "at least")')
    parser.add_argument('--budget_max_batch', type=int, default=None,
                        help='stop the batch search here (reported as "at least")')
    parser.add_argument('--out', default='benchmarks/results', help='CSV and PNG go here')
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes for a check in about a minute (%s)' % QUICK)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    tf.logging.set_verbosity(tf.logging.ERROR)
    os.makedirs(args.out, exist_ok=True)
    device = 'GPU' if compat.gpu_available() else 'CPU'
    rows = []

    print('DenseNet-BC k=%d, batch %d, %dx%d, one Nesterov SGD step on %s, TensorFlow %s; peak = '
          'bytes allocated on top of the variables, time = median of %d steps' % (
              args.growth_rate, args.batch_size, args.image_size, args.image_size, device,
              compat.VERSION, args.steps))
    lines = []
    for depth in args.depths:
        result = {}
        for setting, name in SETTINGS:
            result[name] = measure(_densenet_bc(depth, args.growth_rate, setting),
                                   args.batch_size, args.image_size, args.steps)
            rows.append(_row('densenet_bc', depth, name, args.batch_size, args.image_size,
                             result[name]))
        naive, eff, shared = result['naive'], result['efficient'], result['shared']
        lines.append(['%d' % depth, format(naive['params'], ',')]
                     + ['%.1f' % r['peak_mib'] for r in (naive, eff, shared)]
                     + ['%.1f%%' % (100 * r['peak_mib'] / naive['peak_mib']) for r in (eff, shared)]
                     + [_fmt_time(r['step_s']) for r in (naive, eff, shared)]
                     + ['/'.join('%.0f' % r['build_s'] for r in (naive, eff, shared))])
        _print_table(BC_HEADER if len(lines) == 1 else None, lines[-1:])
    if len(args.depths) > 1:
        for _, setting in SETTINGS:
            peaks = [r['peak_mib'] for r in rows if r['setting'] == setting]
            growth = ', '.join('L=%d->%d x%.2f' % (a, b, pb / pa) for a, b, pa, pb in zip(
                args.depths, args.depths[1:], peaks, peaks[1:]))
            print('%s: peak ~ depth^%.2f (log-log fit); %s' % (
                setting, loglog_slope(args.depths, peaks), growth))

    if args.partial:
        print('\nPartial recomputation, DenseNet-BC-%d k=%d, batch %d:' % (
            args.partial_depth, args.growth_rate, args.batch_size))
        settings = [False] + list(args.partial) + [True, 'shared']
        measured = []
        for setting in settings:
            existing = [r for r in rows if r['depth'] == args.partial_depth and
                        r['setting'] == _setting_name(setting)]
            if existing:
                result = existing[0]
            else:
                result = measure(_densenet_bc(args.partial_depth, args.growth_rate, setting),
                                 args.batch_size, args.image_size, args.steps)
                rows.append(_row('densenet_bc', args.partial_depth, _setting_name(setting),
                                 args.batch_size, args.image_size, result))
            measured.append((_setting_name(setting), result))
        base = measured[0][1]
        _print_table(('efficient', 'peak MiB', 'of naive', 's/step', 'overhead'), [
            [name, '%.1f' % r['peak_mib'], '%.1f%%' % (100 * r['peak_mib'] / base['peak_mib']),
             _fmt_time(r['step_s']), '%+.1f%%' % (100 * (r['step_s'] / base['step_s'] - 1))]
            for name, r in measured])

    if args.keras:
        print('\nDenseNet-121, batch %d, %dx%d, 10 classes: ours vs tf.keras.applications' % (
            args.keras_batch, args.keras_image_size, args.keras_image_size))
        results = []
        for name, build in (('tf.keras DenseNet121', _keras_densenet121),
                            ('ours, naive', _densenet121(False)),
                            ('ours, efficient', _densenet121(True)),
                            ('ours, shared', _densenet121('shared'))):
            result = measure(build, args.keras_batch, args.keras_image_size, args.steps)
            rows.append(_row('keras_densenet121' if name.startswith('tf.keras') else
                             'densenet121', 121, 'keras' if name.startswith('tf.keras') else
                             name.split(', ')[1], args.keras_batch, args.keras_image_size,
                             result))
            results.append((name, result))
        keras = results[0][1]
        _print_table(('model', 'params', 'peak MiB', 'of tf.keras', 's/step', 'vs tf.keras',
                      'build s'), [
            [name, format(r['params'], ','), '%.1f' % r['peak_mib'],
             '%.1f%%' % (100 * r['peak_mib'] / keras['peak_mib']), _fmt_time(r['step_s']),
             '%+.1f%%' % (100 * (r['step_s'] / keras['step_s'] - 1)), '%.1f' % r['build_s']]
            for name, r in results])

    if args.budget_gb:
        print('\nWithin %.3g GiB (variables, momentum and the step\'s peak), k=%d, %dx%d:' % (
            args.budget_gb, args.growth_rate, args.image_size, args.image_size))
        for setting in (False, True, 'shared'):
            depth, batch = budget(args.budget_gb, args.growth_rate, args.batch_size,
                                  args.image_size, args.budget_depth, setting, log=print,
                                  max_depth=args.budget_max_depth,
                                  max_batch=args.budget_max_batch)
            capped_depth = args.budget_max_depth and depth == 6 * (
                (args.budget_max_depth - 4) // 6) + 4
            print('%s: deepest DenseNet-BC at batch %d: %s%s; largest batch for BC-%d: %s%d' % (
                _setting_name(setting), args.batch_size, '>= ' if capped_depth else '',
                'L=%d' % depth if depth else 'none', args.budget_depth,
                '>= ' if batch and batch == args.budget_max_batch else '', batch), flush=True)

    csv_path, png_path = os.path.join(args.out, 'memory.csv'), os.path.join(args.out,
                                                                            'memory.png')
    with open(csv_path, 'w', newline='') as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(row, peak_mib='%.2f' % row['peak_mib'],
                                 variables_mib='%.2f' % row['variables_mib'],
                                 step_s='' if row['step_s'] is None else '%.4f' % row['step_s'],
                                 build_s='%.1f' % row['build_s']))
    _write_plot([dict(r, growth_rate=args.growth_rate) for r in rows], png_path)
    print('\nwrote %s and %s' % (csv_path, png_path))


if __name__ == '__main__':
    main()
