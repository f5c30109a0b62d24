"""The command-line flags of train.py, eval.py and export.py (compatible with the older TF port's).

Only declarations and value parsers live here: what the flags mean together (defaults from a
saved config.json or the dataset, the layout, the learning rate) is `utils.resolve`'s job.
"""
import argparse
import os

from models import MODEL_NAMES, Recomputation
from models.keras_import import KERAS_MODELS
from models.layers import DATA_FORMATS
from utils.config import MAX_STEPS, SIZE_LIMITS
from utils.data import DATASETS, SYNTHETIC_LIKE
from utils.optimizer import SCHEDULES
from utils.resolve import DEFAULTS

_TRUE = ('true', 't', 'yes', 'y', '1')
_FALSE = ('false', 'f', 'no', 'n', '0')
MAX_BLOCKS = 4  # the most dense blocks any model here has; the model checks its own count
MAX_FLOAT32 = 3.4028234663852886e38


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), not the whole usage."""

    def error(self, message):
        self.exit(2, '%s: error: %s (--help for usage)\n' % (self.prog, message))


def train_parser(description=None):
    parser = ArgumentParser(prog='train.py', description=description)
    _model_flags(parser)
    parser.add_argument('--efficient', type=efficiency, default=efficiency('True'),
                        help='recompute dense layers in back-prop: linear memory (default True); '
                             'shared: no concatenations and batch statistics shared between '
                             'layers, the least memory at about naive speed; every=N: only '
                             'every N-th layer, blocks=2,3: only those blocks')
    parser.add_argument('--xla', type=str2bool, default=False,
                        help='XLA auto-clustering, layer by layer so that recomputation keeps '
                             'its saving; runs channels_first on a CPU too')
    parser.add_argument('--train_epochs', type=positive, default=None,
                        help='epochs to train (dataset default: %s)' % ', '.join(
                            '%s %g' % (name, d.train_epochs) for name, d in DEFAULTS.items()))
    parser.add_argument('--max_steps', type=positive_int, default=None,
                        help='stop at this global step instead (overrides --train_epochs)')
    parser.add_argument('--epochs_per_eval', type=non_negative, default=None,
                        help='evaluate on the test split every this many epochs and at the end '
                             '(0: never)')
    parser.add_argument('--learning_rate', type=non_negative, default=None,
                        help='initial rate per worker (default 0.1 x batch/128); x workers')
    parser.add_argument('--lr_schedule', choices=SCHEDULES, default=None,
                        help='step: /10 at 50%% and 75%% of training (the paper\'s CIFAR '
                             'schedule); cosine: half a cosine down to 0 (default: the '
                             'dataset\'s: ' + ', '.join('%s %s' % (name, d.lr_schedule)
                                                        for name, d in DEFAULTS.items()) + ')')
    parser.add_argument('--weight_decay', type=non_negative, default=1e-4)
    parser.add_argument('--momentum', type=fraction, default=0.9, help='Nesterov momentum')
    parser.add_argument('--dropout_rate', type=fraction, default=0.0)
    parser.add_argument('--save_checkpoint_steps', type=positive_int, default=500)
    parser.add_argument('--log_every_steps', type=positive_int, default=50)
    parser.add_argument('--seed', type=size('seed', 0), default=None,
                        help='graph-level random seed')
    parser.add_argument('--download', type=str2bool, default=False,
                        help='fetch CIFAR, MNIST or Fashion-MNIST into --data_dir (default data/ '
                             'for CIFAR, data/mnist or data/fashion_mnist) if it is not there')
    _keras_flag(parser, 'start a new run from (fine-tuning; a classifier of another class '
                        'count starts fresh)')
    parser.add_argument('--inject_nan', type=batch_range, default=None,
                        metavar='FIRST[:COUNT]', help='testing: the FIRST (1-based) and COUNT-1 '
                        'next batches this process reads become NaN (fault drills)')
    return parser


def eval_parser(description=None):
    parser = ArgumentParser(prog='eval.py', description=description)
    _model_flags(parser)
    parser.add_argument('--checkpoint', type=run_path, default=None,
                        help='default: the latest in --model_dir')
    parser.add_argument('--json', default=None, help='also write the results to this file')
    _keras_flag(parser, 'evaluate instead of a checkpoint')
    return parser


class _ExportParser(ArgumentParser):
    """export.py does one of two things; asking for neither is a usage error."""

    def parse_args(self, args=None, namespace=None):
        args = super(_ExportParser, self).parse_args(args, namespace)
        if not (args.predict or args.output or args.saved_model):
            self.error('give --output and/or --saved_model to export, or --predict MODEL_PB')
        if args.predict and not args.images:
            self.error('--predict needs image files')
        return args


def export_parser(description=None):
    parser = _ExportParser(prog='export.py', description=description)
    parser.add_argument('--model_dir', type=run_path, default='runs/model')
    parser.add_argument('--checkpoint', type=run_path, default=None,
                        help='default: the latest in --model_dir')
    parser.add_argument('--output', default=None, help='frozen GraphDef (.pb) to write')
    parser.add_argument('--saved_model', default=None, help='SavedModel directory to write')
    parser.add_argument('--predict', default=None, metavar='MODEL_PB',
                        help='classify the images given after the flags with this frozen graph')
    _keras_flag(parser, 'export instead of a checkpoint (an ImageNet classifier)')
    parser.add_argument('--model', choices=KERAS_MODELS, default=None,
                        help='the architecture of --init_from_keras (default densenet121)')
    parser.add_argument('--image_size', type=size('image_size'), default=None,
                        help='input size of the graph exported from --init_from_keras '
                             '(default 224)')
    parser.add_argument('--top_k', type=positive_int, default=3)
    _debug_flag(parser)
    parser.add_argument('images', nargs='*')
    return parser


def _model_flags(parser):
    """Flags that choose the data and the network. Unset (None), they come from --model_dir's
    config.json if there is one, else from the dataset's defaults (`utils.resolve`)."""
    parser.add_argument('--dataset', choices=DATASETS, default=None,
                        help='digits (bundled, the default), mnist, fashion_mnist, cifar10, '
                             'cifar100, imagenet, synthetic')
    parser.add_argument('--synthetic_like', choices=SYNTHETIC_LIKE, default=None,
                        help='shape and classes of --dataset synthetic (default cifar10)')
    parser.add_argument('--data_dir', default=None,
                        help='where the dataset lives (fashion_mnist: Debian\'s '
                             '/usr/share/datasets/fashion-mnist when it exists)')
    parser.add_argument('--model_dir', type=run_path, default='runs/model',
                        help='checkpoints, TensorBoard summaries and config.json')
    parser.add_argument('--model', choices=MODEL_NAMES, default=None,
                        help='densenet_bc (with --depth/--growth_rate) or densenet121/169/201/264')
    parser.add_argument('--depth', type=size('depth'), default=None, help='DenseNet-BC depth L')
    parser.add_argument('--growth_rate', type=size('growth_rate'), default=None,
                        help='DenseNet-BC growth rate k')
    parser.add_argument('--image_size', type=size('image_size'), default=None,
                        help='ImageNet crop size (default 224)')
    parser.add_argument('--data_format', choices=DATA_FORMATS, default=None,
                        help='default: channels_first on a GPU, else channels_last')
    parser.add_argument('--fp16', type=str2bool, default=False,
                        help='float16 activations, float32 master weights, loss scaling')
    parser.add_argument('--batch_size', type=size('batch_size'), default=None,
                        help='images per step per worker')
    parser.add_argument('--mfm_transitions', type=block_list, default=None, metavar='BLOCKS',
                        help='Max-Feature-Map at these blocks\' transitions (e.g. 2): halves '
                             'the block output')
    parser.add_argument('--mfm_layers', type=block_list, default=None, metavar='BLOCKS',
                        help='Max-Feature-Map in these blocks\' dense layers: halves the '
                             'bottleneck')
    _debug_flag(parser)


def _debug_flag(parser):
    parser.add_argument('--debug', type=str2bool, default=False,
                        help='debug logging, and tracebacks for the one-line errors too')


def _keras_flag(parser, purpose):
    parser.add_argument('--init_from_keras', default=None, metavar='H5',
                        help='tf.keras.applications DenseNet-121/169/201 weights (.h5) to %s'
                        % purpose)


# -- value parsers -----------------------------------------------------------------------------

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
    """--efficient: True/False (any str2bool spelling), 'shared', 'every=N' or 'blocks=i,j'
    -> the `Recomputation` the model takes as it is."""
    try:
        return Recomputation.parse(str2bool(value))
    except argparse.ArgumentTypeError:
        pass
    try:
        plan = Recomputation.parse(value)
        plan.check(MAX_BLOCKS)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return plan


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


# What a checkpoint's file names add to --model_dir: "/model.ckpt-2147483647.data-00000-of-00001"
# and the saver's temporary suffix.
CHECKPOINT_NAME_ROOM = 100


def run_path(value):
    """A --model_dir or --checkpoint path TensorFlow can use: its checkpoint reader takes paths
    as glob patterns (a directory `run[1]` would train once, then never find its checkpoints),
    and a path too long for its checkpoint files would fail only at the first save."""
    if not value or set(value) & set('*?['):
        raise argparse.ArgumentTypeError(
            '%r: TensorFlow reads checkpoint paths as glob patterns; use a path without *, ? '
            'or [' % value if value else 'expected a path')
    limit = os.pathconf('/', 'PC_PATH_MAX')
    longest = max(len(part) for part in value.split(os.sep))
    if len(os.path.abspath(value)) + CHECKPOINT_NAME_ROOM > limit or longest > 255:
        raise argparse.ArgumentTypeError(
            'a path of %d characters (its longest name %d) leaves no room for checkpoint files '
            '(at most %d characters, 255 per name)' % (len(os.path.abspath(value)), longest,
                                                       limit - CHECKPOINT_NAME_ROOM))
    return value


def positive_int(value):
    """An integer in [1, MAX_STEPS] (int32's largest): steps, sizes and depths beyond it are
    typing errors."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 0 < number <= MAX_STEPS:
        raise argparse.ArgumentTypeError('expected a positive integer up to %d, got %r'
                                         % (MAX_STEPS, value))
    return number


def size(name, least=1):
    """The value parser of a size flag: an integer in [least, SIZE_LIMITS[name]] (a larger one
    would build for minutes, or overflow a shape, before failing)."""
    most = SIZE_LIMITS[name]

    def parse(value):
        try:
            number = int(value)
        except ValueError:
            number = least - 1
        if not least <= number <= most:
            raise argparse.ArgumentTypeError('expected an integer from %d to %d, got %.40r'
                                             % (least, most, value))
        return number
    parse.__name__ = name  # argparse names the parser in its "invalid ... value" message
    return parse


def _number(value, within, expected):
    """`value` as a float if `within(it)`, else the flag's error saying what was `expected`."""
    try:
        number = float(value)
    except ValueError:
        number = float('nan')  # within nothing
    if not within(number):
        raise argparse.ArgumentTypeError('expected %s, got %r' % (expected, value))
    return number


def non_negative(value):
    """A finite number in [0, float32's largest]: it becomes a float32 in the graph."""
    return _number(value, lambda n: 0.0 <= n <= MAX_FLOAT32, 'a finite number >= 0')


def positive(value):
    number = non_negative(value)
    if number == 0.0:
        raise argparse.ArgumentTypeError('expected a number > 0, got %r' % value)
    return number


def fraction(value):
    return _number(value, lambda n: 0.0 <= n < 1.0, 'a number in [0, 1)')
