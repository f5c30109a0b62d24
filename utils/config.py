"""A run's two configurations: the model's (what `config.json` stores) and the training's.

Both are frozen: the entry points build them once from flags (`utils.resolve`) and nothing
completes them later. Library code takes them as arguments and reads no flags.
"""
import dataclasses
import json
import math
import os
from typing import Optional, Tuple

from models import MODEL_NAMES
from models.densenet import Recomputation
from utils import files
from utils.checkpoints import CONFIG_FILE
from utils.data import CLASSES
from utils.errors import CheckpointError, UsageError

DATASET_NAMES = tuple(CLASSES)  # what config.json may name (a synthetic run: the one it mimics)

MAX_STEPS = 2 ** 31 - 1  # int32's largest: the most steps a run may have, the largest integer flag
# The largest value of each size, from flags (utils.flags) and files (config.json,
# schedule.json) alike, checked before it reaches TensorFlow: far beyond what trains on any
# machine today, and small enough that no shape computed from them overflows. Depth: the graph
# is the cost (BC-1000's takes 8 GiB of process memory, and it grows with L).
SIZE_LIMITS = dict(depth=3000, growth_rate=1024, image_size=4096, num_classes=100000,
                   batch_size=65536, workers=65536, seed=MAX_STEPS)
MAX_BATCH, MAX_WORKERS = SIZE_LIMITS['batch_size'], SIZE_LIMITS['workers']


@dataclasses.dataclass(frozen=True)
class ModelConfig(object):
    """The network and the data it is built for: what a checkpoint fits, saved by train.py as
    --model_dir/config.json so that eval.py and export.py rebuild the same graph.

    `dataset` fixes the classes, the image size and the input normalisation inside the graph;
    `synthetic` says the run used random images of that shape (`--dataset synthetic`). `depth`
    and `growth_rate` shape DenseNet-BC; the ImageNet models have their own.
    """
    dataset: str
    synthetic: bool
    model: str
    depth: int
    growth_rate: int
    num_classes: int
    image_size: int
    mfm_transitions: Tuple[int, ...] = ()
    mfm_layers: Tuple[int, ...] = ()

    def __post_init__(self):
        for name in ('mfm_transitions', 'mfm_layers'):  # JSON lists, sets: one canonical form
            object.__setattr__(self, name, tuple(sorted(set(getattr(self, name) or ()))))

    @property
    def title(self):
        """'DenseNet-BC (L=100, k=12)' or 'DenseNet-121', with its MFM placement, for logs."""
        name = ('DenseNet-BC (L=%d, k=%d)' % (self.depth, self.growth_rate)
                if self.model == 'densenet_bc' else 'DenseNet-' + self.model[len('densenet'):])
        mfm = ['%s %s' % (where, ','.join(map(str, blocks))) for where, blocks in (
            ('transitions', self.mfm_transitions), ('layers', self.mfm_layers)) if blocks]
        return name + (' with MFM at %s' % '; '.join(mfm) if mfm else '')

    @property
    def data_name(self):
        """The dataset as the --dataset flag names it ('synthetic' for a synthetic run)."""
        return 'synthetic' if self.synthetic else self.dataset

    def difference(self, other):
        """'depth 40 != 100, ...' for each field where `other` differs, or '' if none."""
        ours, theirs = self.to_json(), other.to_json()
        return ', '.join('%s %s != %s' % (k, ours[k], theirs[k]) for k in ours
                         if ours[k] != theirs[k])

    def to_json(self):
        return dict((k, list(v) if isinstance(v, tuple) else v)
                    for k, v in dataclasses.asdict(self).items())

    @classmethod
    def from_json(cls, values, source=CONFIG_FILE):
        """From `to_json()`'s dict, or from a config.json of earlier versions (which named a
        synthetic run's dataset 'synthetic-cifar10' and also held the training flags, ignored
        here); CheckpointError naming `source` if a field is missing or of the wrong type."""
        values = dict(values)
        if 'synthetic' not in values:
            like = str(values.get('dataset', '')).partition('synthetic-')[2]
            values['synthetic'] = bool(like)
            values['dataset'] = like or values.get('dataset')
        fields = dict((f.name, f) for f in dataclasses.fields(cls))
        missing = [name for name, f in fields.items() if name not in values and
                   f.default is dataclasses.MISSING]
        if missing:
            raise CheckpointError('%s: no %s (not a config.json written by train.py?)' % (
                source, ', '.join(missing)))
        kwargs = dict((name, values[name]) for name in fields if name in values)
        for name in ('depth', 'growth_rate', 'num_classes', 'image_size'):
            if isinstance(kwargs[name], bool) or not isinstance(kwargs[name], int) or \
                    not 1 <= kwargs[name] <= SIZE_LIMITS[name]:
                raise CheckpointError('%s: %s must be an integer in [1, %d], got %.40s' % (
                    source, name, SIZE_LIMITS[name], repr(kwargs[name])))
        for name, known in (('dataset', DATASET_NAMES), ('model', MODEL_NAMES)):
            if kwargs[name] not in known:
                raise CheckpointError('%s: unknown %s %r (one of %s)' % (
                    source, name, kwargs[name], ', '.join(known)))
        if not isinstance(kwargs['synthetic'], bool):
            raise CheckpointError('%s: synthetic must be true or false, got %r' % (
                source, kwargs['synthetic']))
        for name in ('mfm_transitions', 'mfm_layers'):
            blocks = kwargs.get(name, [])
            if not isinstance(blocks, list) or not all(
                    isinstance(b, int) and not isinstance(b, bool) for b in blocks):
                raise CheckpointError('%s: %s must be a list of block numbers, got %r' % (
                    source, name, blocks))
        return cls(**kwargs)

    @classmethod
    def load(cls, model_dir):
        """The config.json in `model_dir`, or None if there is none."""
        path = os.path.join(model_dir, CONFIG_FILE)
        if not os.path.lexists(path):
            return None
        try:
            values = files.read_json(path)
        except (OSError, ValueError) as e:  # a directory, FIFO or device too (files.Unreadable)
            raise CheckpointError('%s: unreadable (%s)' % (path, getattr(e, 'strerror', None)
                                                           or e))
        if not isinstance(values, dict):
            raise CheckpointError('%s: not a JSON object' % path)
        return cls.from_json(values, path)

    def save(self, model_dir):
        """Writes `model_dir`/config.json (atomically: a crash leaves the old one or the new)."""
        os.makedirs(model_dir, exist_ok=True)
        files.replace_file(os.path.join(model_dir, CONFIG_FILE),
                           json.dumps(self.to_json(), indent=2, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class TrainConfig(object):
    """How the model is trained. `batch_size` and `learning_rate` are per worker (None: the
    paper's rule, see `initial_learning_rate`), `lr_schedule` one of utils.optimizer.SCHEDULES;
    `max_steps`, when set, replaces `train_epochs`;
    `epochs_per_eval` 0 never evaluates during training; `inject_nan` (first batch, count) is a
    fault drill; `data_format` is the layout of the device that trains; `xla` turns on XLA
    auto-clustering layer by layer (`models.xla`), with the backward pass too where
    `xla_backward` (channels_first on a CPU)."""
    model_dir: str
    batch_size: int
    train_epochs: float
    epochs_per_eval: float
    learning_rate: Optional[float]
    data_format: str
    lr_schedule: str = 'step'
    efficient: Recomputation = Recomputation(every=1)
    fp16: bool = False
    dropout_rate: float = 0.0
    max_steps: Optional[int] = None
    weight_decay: float = 1e-4
    momentum: float = 0.9
    save_checkpoint_steps: int = 500
    log_every_steps: int = 50
    seed: Optional[int] = None
    init_from_keras: Optional[str] = None
    inject_nan: Optional[Tuple[int, int]] = None
    xla: bool = False
    xla_backward: bool = False

    def initial_learning_rate(self, workers=1):
        """The learning rate of a step of `workers` x `batch_size` images: the per-worker rate,
        by default 0.1 x batch/128 (linear scaling from the paper's 0.1), times the workers."""
        per_worker = (0.1 * self.batch_size / 128.0 if self.learning_rate is None
                      else self.learning_rate)
        return per_worker * workers

    def steps_per_epoch(self, train_size, workers=1):
        return max(1, train_size // (self.batch_size * workers))

    def total_steps(self, train_size, workers=1):
        """The global step training stops at; UsageError beyond MAX_STEPS (an epoch count
        that no run could reach, or that overflows TensorFlow's step counters)."""
        if self.max_steps:
            return self.max_steps
        steps = self.train_epochs * self.steps_per_epoch(train_size, workers)
        if not steps <= MAX_STEPS:
            raise UsageError('--train_epochs %g is %g steps of %d images; at most %d steps' % (
                self.train_epochs, steps, self.batch_size * workers, MAX_STEPS))
        return int(math.ceil(steps))

    def eval_every_steps(self, train_size, workers=1):
        steps = self.epochs_per_eval * self.steps_per_epoch(train_size, workers)
        return max(1, int(min(steps, MAX_STEPS)))  # more than any run's steps: at the end

