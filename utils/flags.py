"""Command-line flags shared by train.py and eval.py (compatible with the older TF port's)."""
import argparse
import json
import os

from models import MODEL_NAMES
from utils.data import DATASETS

_TRUE = ('true', 't', 'yes', 'y', '1')
_FALSE = ('false', 'f', 'no', 'n', '0')

# Per-dataset defaults: (model, depth, growth rate, batch size, epochs, epochs per eval)
DATASET_DEFAULTS = {
    'digits': ('densenet_bc', 40, 12, 64, 30, 10),
    'cifar10': ('densenet_bc', 100, 12, 64, 300, 10),
    'cifar100': ('densenet_bc', 100, 12, 64, 300, 10),
    'imagenet': ('densenet121', 121, 32, 256, 90, 1),
    'synthetic': ('densenet_bc', 100, 12, 64, 1, 1),
}
# What fixes the variables' shapes and the input normalisation: a checkpoint only fits these.
ARCHITECTURE_KEYS = ('dataset', 'model', 'depth', 'growth_rate', 'num_classes', 'image_size',
                     'mfm_transitions', 'mfm_layers')
MFM_KEYS = ('mfm_transitions', 'mfm_layers')  # absent from configs saved before MFM: none
CONFIG_FILE = 'config.json'


def str2bool(value):
    """'True'/'false'/'1'/'no'... -> bool, so `--efficient True` works as in the older port."""
    if isinstance(value, bool):
        return value
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError('expected a boolean (True/False, yes/no, 1/0), got %r'
                                     % value)


def efficiency(value):
    """--efficient: True/False (any str2bool spelling), 'every=N' or 'blocks=i,j'."""
    from models.densenet import Recomputation
    try:
        return str2bool(value)
    except argparse.ArgumentTypeError:
        pass
    try:
        plan = Recomputation.parse(value, nb_dense_block=4)  # the block count is checked later
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return str(plan)


def block_list(value):
    """'2,3' -> [2, 3]; '' or 'none' -> [] (1-based block numbers, checked by the model)."""
    if value.strip().lower() in ('', 'none'):
        return []
    try:
        return sorted({int(b) for b in value.split(',')})
    except ValueError:
        raise argparse.ArgumentTypeError('expected block numbers like 2 or 2,3, got %r' % value)


def batch_range(value):
    """'5' -> (5, 1); '5:3' -> (5, 3): a first batch number and a count, both positive."""
    try:
        first, _, count = value.partition(':')
        result = int(first), int(count or 1)
    except ValueError:
        result = (0, 0)
    if min(result) < 1:
        raise argparse.ArgumentTypeError('expected FIRST or FIRST:COUNT (positive), got %r'
                                         % value)
    return result


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), not the whole usage."""

    def error(self, message):
        self.exit(2, '%s: error: %s (--help for usage)\n' % (self.prog, message))


def positive_int(value):
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError('expected a positive integer, got %r' % value)
    if number <= 0:
        raise argparse.ArgumentTypeError('expected a positive integer, got %r' % value)
    return number


def non_negative(value):
    try:
        number = float(value)
    except ValueError:
        number = float('nan')
    if not number >= 0.0:
        raise argparse.ArgumentTypeError('expected a number >= 0, got %r' % value)
    return number


def positive(value):
    number = non_negative(value)
    if number == 0.0:
        raise argparse.ArgumentTypeError('expected a number > 0, got %r' % value)
    return number


def fraction(value):
    number = float(value)
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError('expected a number in [0, 1), got %r' % value)
    return number


def add_model_flags(parser):
    """Flags that choose the data and the network; None means the dataset's (or saved) default."""
    parser.add_argument('--dataset', choices=DATASETS, default='digits',
                        help='digits (bundled, the default), cifar10, cifar100, imagenet, synthetic')
    parser.add_argument('--synthetic_like', choices=('cifar10', 'cifar100', 'imagenet'),
                        default='cifar10', help='shape and classes of --dataset synthetic')
    parser.add_argument('--data_dir', default=None, help='where the dataset lives')
    parser.add_argument('--model_dir', default='runs/model',
                        help='checkpoints, TensorBoard summaries and config.json')
    parser.add_argument('--model', choices=MODEL_NAMES, default=None,
                        help='densenet_bc (with --depth/--growth_rate) or densenet121/169/201/264')
    parser.add_argument('--depth', type=positive_int, default=None, help='DenseNet-BC depth L')
    parser.add_argument('--growth_rate', type=positive_int, default=None,
                        help='DenseNet-BC growth rate k')
    parser.add_argument('--image_size', type=positive_int, default=None,
                        help='ImageNet crop size (default 224)')
    parser.add_argument('--data_format', choices=('channels_first', 'channels_last'),
                        default=None, help='default: channels_first on a GPU, else channels_last')
    parser.add_argument('--efficient', type=efficiency, default=True,
                        help='recompute dense layers in back-prop: linear memory (default True); '
                             'every=N: only every N-th layer, blocks=2,3: only those blocks')
    parser.add_argument('--fp16', type=str2bool, default=False,
                        help='float16 activations, float32 master weights, loss scaling')
    parser.add_argument('--batch_size', type=positive_int, default=None,
                        help='images per step per worker')
    parser.add_argument('--mfm_transitions', type=block_list, default=None, metavar='BLOCKS',
                        help='Max-Feature-Map at these blocks\' transitions (e.g. 2): halves '
                             'the block output')
    parser.add_argument('--mfm_layers', type=block_list, default=None, metavar='BLOCKS',
                        help='Max-Feature-Map in these blocks\' dense layers: halves the '
                             'bottleneck')
    parser.add_argument('--debug', type=str2bool, default=False, help='show tracebacks')


def add_keras_flag(parser, purpose):
    parser.add_argument('--init_from_keras', default=None, metavar='H5',
                        help='tf.keras.applications DenseNet-121/169/201 weights (.h5) to %s'
                        % purpose)


def resolve_model_flags(args, dataset):
    """Fills unset model flags from the dataset's defaults; returns the architecture config."""
    model, depth, growth, batch = DATASET_DEFAULTS[args.dataset][:4]
    if args.dataset == 'synthetic':
        model, depth, growth, batch = DATASET_DEFAULTS[args.synthetic_like][:4]
    args.model = args.model or model
    args.depth = args.depth or depth
    args.growth_rate = args.growth_rate or growth
    args.batch_size = args.batch_size or batch
    args.mfm_transitions = args.mfm_transitions or []
    args.mfm_layers = args.mfm_layers or []
    if args.data_format == 'channels_first':
        from models.layers import default_data_format
        if default_data_format() != 'channels_first':
            raise ValueError('--data_format channels_first needs a GPU: TensorFlow 1.15 has no '
                             'NCHW convolutions on CPU (leave it unset to pick by device)')
    return dict(dataset=args.dataset if args.dataset != 'synthetic' else
                'synthetic-' + args.synthetic_like, model=args.model, depth=args.depth,
                growth_rate=args.growth_rate, num_classes=dataset.num_classes,
                image_size=dataset.image_shape[0], mfm_transitions=args.mfm_transitions,
                mfm_layers=args.mfm_layers)


def model_title(args):
    """'DenseNet-BC (L=100, k=12)' or 'DenseNet-121' for a log line."""
    name = ('DenseNet-BC (L=%d, k=%d)' % (args.depth, args.growth_rate)
            if args.model == 'densenet_bc' else 'DenseNet-' + args.model[len('densenet'):])
    mfm = ['%s %s' % (where, ','.join(map(str, blocks))) for where, blocks in (
        ('transitions', args.mfm_transitions), ('layers', args.mfm_layers)) if blocks]
    return name + (' with MFM at %s' % '; '.join(mfm) if mfm else '')


def load_config(model_dir):
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def save_config(model_dir, config):
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, CONFIG_FILE)
    with open(path + '.tmp', 'w') as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(path + '.tmp', path)


def saved_dataset(saved):
    """(dataset, synthetic_like) from a saved config; 'synthetic-cifar10' names both."""
    name = saved.get('dataset', 'digits')
    if name.startswith('synthetic-'):
        return 'synthetic', name.split('-', 1)[1]
    return name, None


def architecture_difference(saved, wanted):
    """'depth 40 != 100, ...' for the architecture keys that differ, or '' if none."""
    def value(config, key):
        return config.get(key) or [] if key in MFM_KEYS else config.get(key)
    return ', '.join('%s %s != %s' % (k, value(saved, k), value(wanted, k))
                     for k in ARCHITECTURE_KEYS if value(saved, k) != value(wanted, k))
