"""The one place where parsed flags, a saved config.json and the dataset's defaults become the
frozen configurations train.py, eval.py and export.py run: `for_train`, `for_eval`, `for_export`.

Every flag that chooses the model defaults to what --model_dir/config.json holds, then to the
dataset's defaults (`DEFAULTS`); the model is checked buildable here, before any data is read or
anything is written (UsageError with the model's own reason).
"""
import dataclasses
import os
from typing import Optional

from models.compat import tf
from models.layers import CHANNELS_FIRST, CHANNELS_LAST, default_data_format
from utils import checkpoints, data, files
from utils.config import CONFIG_FILE, ModelConfig, TrainConfig
from utils.errors import CheckpointError, UsageError
from utils.inference import creator


@dataclasses.dataclass(frozen=True)
class Defaults(object):
    """What train.py uses for a dataset where the flags and config.json say nothing."""
    model: str
    depth: int
    growth_rate: int
    batch_size: int
    train_epochs: float
    epochs_per_eval: float
    lr_schedule: str = 'step'


DEFAULTS = {
    'digits': Defaults('densenet_bc', 40, 12, 64, 30, 10),
    'mnist': Defaults('densenet_bc', 40, 12, 64, 15, 5),
    'fashion_mnist': Defaults('densenet_bc', 40, 12, 64, 24, 5, 'cosine'),
    'cifar10': Defaults('densenet_bc', 100, 12, 64, 300, 10),
    'cifar100': Defaults('densenet_bc', 100, 12, 64, 300, 10),
    'imagenet': Defaults('densenet121', 121, 32, 256, 90, 1),
}


def defaults(dataset, synthetic=False):
    """The `Defaults` of `dataset`; a synthetic run is a smoke test: one epoch, evaluated at
    its end."""
    if synthetic:
        return dataclasses.replace(DEFAULTS[dataset], train_epochs=1, epochs_per_eval=1)
    return DEFAULTS[dataset]


@dataclasses.dataclass(frozen=True)
class Training(object):
    """What train.py runs: the model, how it trains, and where its data is (None: no files)."""
    model: ModelConfig
    config: TrainConfig
    data_dir: Optional[str]
    download: bool


@dataclasses.dataclass(frozen=True)
class Evaluation(object):
    """What eval.py runs: the model and the weights (a checkpoint, or a Keras file), the test
    split's directory, and `why` a checkpoint might not fit (the flags that changed the model)."""
    model: ModelConfig
    checkpoint: Optional[str]
    keras_weights: Optional[str]
    data_dir: Optional[str]
    batch_size: int
    data_format: str
    fp16: bool
    why: str


@dataclasses.dataclass(frozen=True)
class Export(object):
    """What export.py freezes: the model and its weights (a checkpoint, or a Keras file)."""
    model: ModelConfig
    checkpoint: Optional[str]
    keras_weights: Optional[str]


def for_train(args, gpu):
    """train.py's `Training` (`gpu`: whether the process trains on a GPU); UsageError if the
    flags contradict the model saved in --model_dir."""
    saved = ModelConfig.load(args.model_dir)
    model = model_config(args, saved)
    changed = saved.difference(model) if saved else ''
    if changed:
        raise UsageError('%s holds another model (%s); use a new --model_dir' % (
            args.model_dir, changed))
    existing = checkpoints.scan(args.model_dir, verify=False).complete
    check_layers(model, existing[-1] if existing else None)
    config = train_config(args, model, data_format(args.data_format, gpu, args.xla), gpu)
    if config.init_from_keras:
        check_keras_source(config.init_from_keras, model.model)
    download = bool(args.download and not model.synthetic and model.dataset in data.DOWNLOADABLE)
    return Training(model, config, args.data_dir or data.default_data_dir(model.dataset, download),
                    download)


def for_eval(args, gpu):
    """eval.py's `Evaluation`: the model in --model_dir/config.json, changed by the flags given;
    the layout of the device that evaluates (`gpu`), whatever the run trained with."""
    checkpoint = None if args.init_from_keras else checkpoints.find_checkpoint(
        args.model_dir, args.checkpoint)
    saved = ModelConfig.load(args.model_dir)
    model = model_config(args, saved)
    if args.init_from_keras:
        check_keras_source(args.init_from_keras, model.model)
    changed = saved.difference(model) if saved else ''
    check_layers(model, checkpoint, 'the flags change %s: %s' % (CONFIG_FILE, changed)
                 if changed else '')
    return Evaluation(
        model, checkpoint, args.init_from_keras,
        args.data_dir or data.default_data_dir(model.dataset),
        args.batch_size or defaults(model.dataset, model.synthetic).batch_size,
        data_format(args.data_format, gpu), args.fp16,
        'the flags change %s: %s' % (CONFIG_FILE, changed) if changed else '')


def for_export(args):
    """export.py's `Export`: Keras ImageNet weights as --model says, or --model_dir's model."""
    if args.init_from_keras:
        model = model_config(args, default_dataset='imagenet')
        check_keras_source(args.init_from_keras, model.model)
        return Export(model, None, args.init_from_keras)
    checkpoint = checkpoints.find_checkpoint(args.model_dir, args.checkpoint)
    saved = ModelConfig.load(args.model_dir)
    if not saved:
        raise CheckpointError('%s: no %s (written by train.py) to say which model this is'
                              % (args.model_dir, CONFIG_FILE))
    model = model_config(args, saved)
    check_layers(model, checkpoint)
    return Export(model, checkpoint, None)


def model_config(args, saved=None, default_dataset='digits'):
    """The ModelConfig the flags in `args` ask for: each flag left unset is taken from `saved`
    (--model_dir's config.json) if there is one, else from the dataset's defaults; UsageError
    if it cannot be built (with train.py's --efficient, when `args` has it)."""
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
    cls, fallback = data.CLASSES[dataset], defaults(dataset, synthetic)

    def pick(name, default):
        if flag(name) is not None:
            return flag(name)
        return getattr(saved, name) if saved else default

    # Only ImageNet's image size is free; the others are what their files hold.
    image_size = (pick('image_size', cls.image_shape[0]) if dataset == 'imagenet'
                  else cls.image_shape[0])
    model = ModelConfig(
        dataset=dataset, synthetic=synthetic, model=pick('model', fallback.model),
        depth=pick('depth', fallback.depth),
        growth_rate=pick('growth_rate', fallback.growth_rate), num_classes=cls.num_classes,
        image_size=image_size, mfm_transitions=pick('mfm_transitions', ()),
        mfm_layers=pick('mfm_layers', ()))
    _check_buildable(model, flag('efficient') or False)
    return model


def _check_buildable(model, efficient=False):
    """`model`'s creator, unbuilt; UsageError with the model's own reason if it cannot be built
    (a depth off the DenseNet-BC rule, images too small for its blocks, MFM on an odd channel
    count, recomputation of a block it lacks). The constructor checks; calling it builds."""
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, model.image_size, model.image_size, 3])
        try:
            return creator(model, images, CHANNELS_LAST, efficient=efficient)
        except ValueError as e:
            raise UsageError(str(e))


def check_layers(model, checkpoint, why=''):
    """CheckpointError, before any graph is built, if `checkpoint` has other dense-layer counts
    than `model`: a config.json edited to depth 10000 is named at once, not after the minutes
    its graph would take to build. (Shapes are compared once the graph exists.)"""
    if checkpoint:
        checkpoints.check_layer_counts(checkpoint, _check_buildable(model).nb_layers, why)


def train_config(args, model, layout, gpu=False):
    """The TrainConfig of train.py's flags for `model` (from `model_config`, which checked
    them against it) in `layout` on a GPU or not; unset ones from the dataset's defaults."""
    fallback = defaults(model.dataset, model.synthetic)
    return TrainConfig(
        model_dir=args.model_dir, batch_size=args.batch_size or fallback.batch_size,
        train_epochs=args.train_epochs or fallback.train_epochs,
        epochs_per_eval=(fallback.epochs_per_eval if args.epochs_per_eval is None
                         else args.epochs_per_eval),
        learning_rate=args.learning_rate, lr_schedule=args.lr_schedule or fallback.lr_schedule,
        data_format=layout, efficient=args.efficient,
        fp16=args.fp16, dropout_rate=args.dropout_rate, max_steps=args.max_steps,
        weight_decay=args.weight_decay, momentum=args.momentum,
        save_checkpoint_steps=args.save_checkpoint_steps,
        log_every_steps=args.log_every_steps, seed=args.seed,
        init_from_keras=args.init_from_keras, inject_nan=args.inject_nan, xla=args.xla,
        xla_backward=args.xla and layout == CHANNELS_FIRST and not gpu)


def data_format(flag, gpu, xla=None):
    """--data_format, or the layout of the device that runs (`gpu`: whether it is a GPU);
    channels_first on a CPU only under `xla` (train.py's --xla; None: a command without it),
    whose CPU backend runs it."""
    if flag == CHANNELS_FIRST and not (gpu or xla):
        raise UsageError('--data_format channels_first needs a GPU%s: TensorFlow has no NCHW '
                         'convolutions on CPU (leave it unset to pick by device)'
                         % (' or --xla True' if xla is not None else ''))
    return flag or default_data_format(gpu)


def check_keras_source(path, model_name):
    """UsageError, before any graph is built, if Keras weights `path` cannot be loaded into
    `model_name` (a model without Keras weights, or no such file)."""
    from models.keras_import import KERAS_MODELS, check_source
    try:
        if model_name in KERAS_MODELS and os.path.lexists(path):  # a FIFO would block HDF5
            files.check_file(path, 'keras')
        check_source(path, model_name)
    except OSError as e:
        raise UsageError('--init_from_keras %s: %s' % (path, e.strerror or e))
    except ValueError as e:
        raise UsageError(str(e))
