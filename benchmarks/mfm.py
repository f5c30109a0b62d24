"""Max-Feature-Map variants of DenseNet-BC against the plain one: cost, and accuracy on digits.

    python -m benchmarks.mfm                 # BC-100 k=12 cost at batch 64; BC-40 on digits, 3 seeds
    python -m benchmarks.mfm --quick         # tiny sizes, one seed, a few epochs

Cost: parameters, peak training memory and median step time (benchmarks.memory.measure), naive
and efficient. Accuracy: train.py + the final test evaluation for each variant and seed with the
same budget (epochs, batch, schedule); mean and spread (min..max) of top-1 on the 360 test images.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (mfm_transitions, mfm_layers); "middle and last parts of the main path", as in the note.
VARIANTS = (('plain', [], []),
            ('mfm t2', [2], []),
            ('mfm t2 + l2,3', [2], [2, 3]))


def cost(depth, batch_size, image_size, steps):
    """[(variant, efficient, measure dict)] for DenseNet-BC-`depth` k=12."""
    import models
    from benchmarks.memory import measure
    rows = []
    for name, transitions, layers in VARIANTS:
        for efficient in (False, True):
            def build(images, classes, transitions=transitions, layers=layers,
                      efficient=efficient):
                return models.densenet_bc(images, classes, depth=depth, growth_rate=12,
                                          efficient=efficient, data_format='channels_last',
                                          mfm_transitions=transitions, mfm_layers=layers)()
            rows.append((name, efficient, measure(build, batch_size, image_size, steps)))
    return rows


def accuracy(depth, epochs, seeds, work_dir):
    """{variant: [test top-1 per seed]}: train.py on digits, then its final evaluation."""
    results = {}
    for name, transitions, layers in VARIANTS:
        for seed in seeds:
            model_dir = os.path.join(work_dir, '%s-seed%d' % (name.replace(' ', '_').replace(
                '+', '').replace(',', ''), seed))
            shutil.rmtree(model_dir, ignore_errors=True)  # a fresh run, not a resumed one
            args = [sys.executable, os.path.join(ROOT, 'train.py'), '--dataset', 'digits',
                    '--depth', str(depth), '--model_dir', model_dir, '--seed', str(seed),
                    '--train_epochs', str(epochs), '--epochs_per_eval', str(epochs),
                    '--mfm_transitions', ','.join(map(str, transitions)) or 'none',
                    '--mfm_layers', ','.join(map(str, layers)) or 'none']
            proc = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True)
            found = re.findall(r'top-1 ([\d.]+)% on (\d+) test images', proc.stdout)
            if proc.returncode or not found:
                raise RuntimeError('%s seed %d failed:\n%s' % (name, seed, proc.stdout[-2000:]))
            results.setdefault(name, []).append(float(found[-1][0]))
            print('  %s, seed %d: %.2f%%' % (name, seed, results[name][-1]), flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--depth', type=int, default=100, help='BC depth for the cost table')
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--image_size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--train_depth', type=int, default=40, help='BC depth trained on digits')
    parser.add_argument('--epochs', type=float, default=30)
    parser.add_argument('--seeds', type=int, nargs='*', default=[1, 2, 3],
                        help='digits training runs per variant (none: only the cost table)')
    parser.add_argument('--work_dir', default='runs/mfm')
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    if args.quick:
        args.depth, args.batch_size, args.image_size, args.steps = 16, 8, 16, 2
        args.train_depth, args.epochs, args.seeds = 16, 2, [1]
    from models.compat import tf
    tf.logging.set_verbosity(tf.logging.ERROR)

    print('DenseNet-BC-%d k=12, batch %d, %dx%d, one training step (median of %d):' % (
        args.depth, args.batch_size, args.image_size, args.image_size, args.steps))
    print('| variant | params | naive MiB | efficient MiB | naive s/step | efficient s/step |')
    print('|---|---|---|---|---|---|')
    rows = cost(args.depth, args.batch_size, args.image_size, args.steps)
    for name, _, _ in VARIANTS:
        naive, eff = [r for n, e, r in sorted(rows, key=lambda r: r[1]) if n == name]
        print('| %s | %s | %.1f | %.1f | %.3f | %.3f |' % (
            name, format(naive['params'], ','), naive['peak_mib'], eff['peak_mib'],
            naive['step_s'], eff['step_s']), flush=True)

    if not args.seeds:
        return
    print('\nDenseNet-BC-%d k=12 on digits, %g epochs, seeds %s (efficient):' % (
        args.train_depth, args.epochs, ' '.join(map(str, args.seeds))))
    results = accuracy(args.train_depth, args.epochs, args.seeds, args.work_dir)
    print('| variant | test top-1 mean | min | max |')
    print('|---|---|---|---|')
    for name, values in results.items():
        print('| %s | %.2f%% | %.2f%% | %.2f%% |' % (name, np.mean(values), min(values),
                                                  max(values)))


if __name__ == '__main__':
    main()
