"""Command-line flags of train.py, eval.py and export.py (compatible with the older TF port's),
and the one place where flags, a saved config.json and the dataset's defaults become configs."""
import argparse

from models import MODEL_NAMES, Recomputation, create
from models.compat import tf
from models.layers import CHANNELS_FIRST, CHANNELS_LAST
from utils import data
from utils.config import ModelConfig, TrainConfig
from utils.errors import UsageError

_TRUE = ('true', 't', 'yes', 'y', '1')
_FALSE = ('false', 'f', 'no', 'n', '0')
MAX_BLOCKS = 4  # the most dense blocks any model here has; the model checks its own count


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
    """Flags that choose the data and the network. Unset (None), they come from --model_dir's
    config.json if there is one, else from the dataset's defaults (see `resolve_model`)."""
    parser.add_argument('--dataset', choices=data.DATASETS, default=None,
                        help='digits (bundled, the default), mnist, fashion_mnist, cifar10, '
                             'cifar100, imagenet, synthetic')
    parser.add_argument('--synthetic_like', choices=data.SYNTHETIC_LIKE, default=None,
                        help='shape and classes of --dataset synthetic (default cifar10)')
    parser.add_argument('--data_dir', default=None,
                        help='where the dataset lives (fashion_mnist: Debian\'s '
                             '/usr/share/datasets/fashion-mnist when it exists)')
    parser.add_argument('--model_dir', default='runs/model',
                        help='checkpoints, TensorBoard summaries and config.json')
    parser.add_argument('--model', choices=MODEL_NAMES, default=None,
                        help='densenet_bc (with --depth/--growth_rate) or densenet121/169/201/264')
    parser.add_argument('--depth', type=positive_int, default=None, help='DenseNet-BC depth L')
    parser.add_argument('--growth_rate', type=positive_int, default=None,
                        help='DenseNet-BC growth rate k')
    parser.add_argument('--image_size', type=positive_int, default=None,
                        help='ImageNet crop size (default 224)')
    parser.add_argument('--data_format', choices=(CHANNELS_FIRST, CHANNELS_LAST),
                        default=None, help='default: channels_first on a GPU, else channels_last')
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
    add_debug_flag(parser)


def add_debug_flag(parser):
    parser.add_argument('--debug', type=str2bool, default=False,
                        help='debug logging, and tracebacks for the one-line errors too')


def add_keras_flag(parser, purpose):
    parser.add_argument('--init_from_keras', default=None, metavar='H5',
                        help='tf.keras.applications DenseNet-121/169/201 weights (.h5) to %s'
                        % purpose)


def resolve_model(args, saved=None, default_dataset='digits'):
    """The ModelConfig the flags in `args` ask for: each flag left unset is taken from `saved`
    (--model_dir's config.json) if there is one, else from the dataset's defaults. train.py,
    eval.py and export.py all build their model this way; UsageError if it cannot be built
    (with train.py's --efficient, when `args` has it)."""
    def flag(name):
        return getattr(args, name, None)

    if flag('dataset') == 'synthetic':
        like = flag('synthetic_like') or (saved.dataset if saved and saved.synthetic else
                                          'cifar10')
        dataset, synthetic = like, True
    elif flag('dataset'):
        dataset, synthetic = flag('dataset'), False
    elif saved:
        dataset, synthetic = saved.dataset, saved.synthetic
    else:
        dataset, synthetic = default_dataset, False
    cls = data.CLASSES[dataset]
    defaults = data.defaults(dataset, synthetic)

    def pick(name, default):
        if flag(name) is not None:
            return flag(name)
        return getattr(saved, name) if saved else default

    # Only ImageNet's image size is free; the others are what their files hold.
    image_size = (pick('image_size', cls.image_shape[0]) if dataset == 'imagenet'
                  else cls.image_shape[0])
    model = ModelConfig(
        dataset=dataset, synthetic=synthetic, model=pick('model', defaults.model),
        depth=pick('depth', defaults.depth), growth_rate=pick('growth_rate', defaults.growth_rate),
        num_classes=cls.num_classes, image_size=image_size,
        mfm_transitions=pick('mfm_transitions', ()), mfm_layers=pick('mfm_layers', ()))
    _check_buildable(model, flag('efficient') or False)
    return model


def _check_buildable(model, efficient=False):
    """UsageError with the model's own reason if `model` cannot be built (a depth off the
    DenseNet-BC rule, MFM on an odd channel count, recomputation of a block it lacks): checked
    here, before any data is read or anything is written. (The creator's constructor checks;
    calling it would build the graph.)"""
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, model.image_size, model.image_size, 3])
        try:
            create(model.model, images, model.num_classes, depth=model.depth,
                   growth_rate=model.growth_rate, data_format=CHANNELS_LAST,
                   efficient=efficient, mfm_transitions=model.mfm_transitions,
                   mfm_layers=model.mfm_layers)
        except ValueError as e:
            raise UsageError(str(e))


def data_format(flag, gpu):
    """--data_format, or the layout of the device that runs (`gpu`: whether it is a GPU)."""
    if flag == CHANNELS_FIRST and not gpu:
        raise UsageError('--data_format channels_first needs a GPU: TensorFlow has no NCHW '
                         'convolutions on CPU (leave it unset to pick by device)')
    return flag or (CHANNELS_FIRST if gpu else CHANNELS_LAST)


def resolve_training(args, model, layout):
    """The TrainConfig of train.py's flags for `model` (from `resolve_model`, which checked
    them against it); unset ones from the dataset's defaults."""
    defaults = data.defaults(model.dataset, model.synthetic)
    batch_size = args.batch_size or defaults.batch_size
    return TrainConfig(
        model_dir=args.model_dir, batch_size=batch_size,
        train_epochs=args.train_epochs or defaults.train_epochs,
        epochs_per_eval=(defaults.epochs_per_eval if args.epochs_per_eval is None
                         else args.epochs_per_eval),
        learning_rate=(0.1 * batch_size / 128.0 if args.learning_rate is None
                       else args.learning_rate),
        data_format=layout, efficient=args.efficient, fp16=args.fp16,
        dropout_rate=args.dropout_rate, max_steps=args.max_steps,
        weight_decay=args.weight_decay, momentum=args.momentum,
        save_checkpoint_steps=args.save_checkpoint_steps,
        log_every_steps=args.log_every_steps, seed=args.seed,
        init_from_keras=args.init_from_keras, inject_nan=args.inject_nan)


def check_keras_source(path, model_name):
    """UsageError, before any graph is built, if Keras weights `path` cannot be loaded into
    `model_name` (a model without Keras weights, or no such file)."""
    from models.keras_import import check_source
    try:
        check_source(path, model_name)
    except ValueError as e:
        raise UsageError(str(e))
