"""Ours beside what a TF1 user already has: Grappler's memory optimizer and openai's
gradient-checkpointing, each on the naive DenseNet, measured as `benchmarks.memory` measures our
modes (one process each, BFC peak on top of the variables, ops, build, step).

    python -m benchmarks.peers --openai DIR            # BC-40, BC-100 (k=12 b64), BC-250 k=24 b16
    python -m benchmarks.peers --configs 40:12:64 --peers grappler-manual openai-collection

The peers, as their users would apply them (none is vendored or required):
- grappler-heuristics: `RewriterConfig.memory_optimization = RECOMPUTATION_HEURISTICS`, no code.
- grappler-manual: `MANUAL`, with `_recompute_hint` set on the naive graph's concatenations,
  batch norms and ReLUs (what Grappler recomputes is then what `efficient=True` recomputes).
- openai-speed / -memory / -collection: `memory_saving_gradients.gradients(loss, variables,
  checkpoints=...)` from cybertronai/gradient-checkpointing (2018) in place of `tf.gradients`;
  'collection' checkpoints each dense layer's new features and each transition's output, the
  natural DenseNet use. It needs `tf.contrib.graph_editor` (TF 1.15) and `toposort`: fetch both
  into one directory and pass it as --openai:
      git clone https://github.com/cybertronai/gradient-checkpointing DIR
      pip install --target DIR toposort
  Without --openai (or on TF 2) its columns say why they are empty.
"""
import argparse
import dataclasses
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import memory  # noqa: E402
from benchmarks.peer_methods import COLUMNS, PEERS, openai_missing  # noqa: E402


def config(value):
    """'L:k:batch', e.g. 250:24:16."""
    try:
        depth, growth, batch = value.split(':')
        return memory.bc_depth(depth), int(growth), int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not L:k:batch (e.g. 250:24:16)' % value)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--configs', type=config, nargs='*',
                        default=[(40, 12, 64), (100, 12, 64), (250, 24, 16)], metavar='L:K:B')
    parser.add_argument('--peers', nargs='*', default=list(PEERS), choices=list(PEERS))
    parser.add_argument('--openai', default='', metavar='DIR',
                        help="cybertronai/gradient-checkpointing's directory, toposort in it")
    parser.add_argument('--image_size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=1,
                        help='timed steps after a warm-up step (median reported)')
    parser.add_argument('--limit_gb', type=float, default=memory._physical_gib() * 0.9)
    return parser.parse_args(argv)


def main(argv=None, run=memory.measure):
    args = parse_args(argv)
    missing = openai_missing(args.openai)
    if not missing:  # a spawned child starts with this sys.path
        sys.path.insert(0, os.path.abspath(args.openai))
    from models import compat
    print('Peers on the naive DenseNet-BC beside ours, one Nesterov-SGD step each in a process of '
          'its own, TensorFlow %s, CPU; peak = BFC allocator bytes on top of the variables; '
          'each cell: value (its ratio to naive from the same run)' % compat.VERSION)
    print('| L, k, batch | measure | ' + ' | '.join(COLUMNS) + ' |')
    print('|' + '---|' * (len(COLUMNS) + 2))
    rows = []
    for depth, growth, batch in args.configs:
        results = {}
        for column in COLUMNS:
            case = memory.Case('densenet_bc', depth, growth, column, batch, args.image_size,
                               args.steps)
            if column in PEERS and column not in args.peers:
                results[column] = dict(status='not asked for (--peers)')
            elif column in PEERS and PEERS[column].checkpoints and missing:
                results[column] = dict(status=missing)
            else:
                results[column] = run(case, args.limit_gb)
            rows.append(dict(dataclasses.asdict(case), **results[column]))
        for line in _lines('%d, %d, %d' % (depth, growth, batch), results):
            print(line, flush=True)
    return rows


def _lines(first, results):
    base = results['naive']
    lines = []
    for key, name, digits in (('peak_mib', 'peak MiB', 1), ('ops', 'ops', 0),
                              ('build_s', 'build s', 1), ('step_s', 's/step', 2)):
        cells = []
        for column in COLUMNS:
            result = results[column]
            if result.get('status') != 'ok':
                cells.append(result.get('status', '-') if key == 'peak_mib' else '')
            else:
                cells.append('%s (%.2fx)' % (format(result[key], ',.%df' % digits),
                                             result[key] / base[key]) if
                             column != 'naive' and base.get(key) else
                             format(result[key], ',.%df' % digits))
        lines.append('| %s | %s | %s |' % (first if key == 'peak_mib' else '', name,
                                           ' | '.join(cells)))
    return lines


if __name__ == '__main__':
    main()
