"""One process, or one of several under Horovod: the one place that knows which.

`current()` is Horovod when horovodrun (or mpirun) launched the process, and a single process
otherwise, with or without Horovod installed. Every Horovod call of the project is in `Horovod`
below, marked `# Horovod:`; the training loop and the Estimator model_fn only call the adapter.
"""
import os

from models import compat
from models.compat import tf
from utils.errors import UsageError

# How long a Horovod worker waits for a peer that is gone (set unless the user sets it).
GLOO_TIMEOUT_SECONDS = 60
# What horovodrun (Gloo) and mpirun set in every process they start.
LAUNCHER_VARIABLES = ('HOROVOD_RANK', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'PMIX_RANK')

_current = None


def current():
    """The process's distribution, set up on the first call (Horovod's init, the device)."""
    global _current
    if _current is None:
        launched = any(name in os.environ for name in LAUNCHER_VARIABLES)
        _current = Horovod() if launched else SingleProcess()
    return _current


def is_chief():
    """Whether this process is rank 0 (also before `current()` was first called)."""
    return _current is None or _current.is_chief


class SingleProcess(object):
    """One worker: the whole batch, nothing to reduce or broadcast.

    `gpu` says whether the process trains on a GPU. It is decided once, here, from the devices
    the process can see, without creating one (which in TF1 would take memory on every GPU).
    """
    size, rank, local_rank = 1, 0, 0

    def __init__(self):
        self.gpu = compat.gpu_available()

    @property
    def is_chief(self):
        return self.rank == 0

    def session_config(self):
        return tf.ConfigProto(allow_soft_placement=True)

    def optimizer(self, optimizer, fp16):
        """`optimizer` whose gradients are those of the global batch."""
        return optimizer

    def sum(self, tensor, name):
        """`tensor` summed over the workers (computed in every step that fetches it)."""
        return tf.identity(tensor, name=name)

    def hooks(self):
        """SessionRunHooks every worker needs."""
        return []


class Horovod(SingleProcess):
    """One of `size` workers started by horovodrun: each reads its shard of the data, gradients
    are averaged across workers, and rank 0 alone writes checkpoints and summaries."""

    def __init__(self):
        os.environ.setdefault('HOROVOD_GLOO_TIMEOUT_SECONDS', str(GLOO_TIMEOUT_SECONDS))
        try:
            import horovod.tensorflow as hvd
        except ImportError as e:
            raise UsageError('this process was launched by horovodrun or mpirun, but Horovod '
                             'is not installed here (%s): pip install -r '
                             'requirements-horovod.txt, see the README' % e)
        hvd.init()  # Horovod: one process per worker.
        self._hvd = hvd
        self.size, self.rank, self.local_rank = hvd.size(), hvd.rank(), hvd.local_rank()
        super(Horovod, self).__init__()

    def session_config(self):
        config = super(Horovod, self).session_config()
        if self.gpu:  # Horovod: one GPU per process, chosen before any session touches one.
            config.gpu_options.visible_device_list = str(self.local_rank)
        return config

    def optimizer(self, optimizer, fp16):
        # Horovod: average gradients across workers (in float16 on the wire under --fp16).
        compression = self._hvd.Compression.fp16 if fp16 else self._hvd.Compression.none
        return self._hvd.DistributedOptimizer(_StableGradientNames(optimizer),
                                              compression=compression)

    def sum(self, tensor, name):
        return self._hvd.allreduce(tensor, op=self._hvd.Sum, name=name)  # Horovod: summed.

    def hooks(self):
        return [_BroadcastVariables(self._hvd)]


class _BroadcastVariables(tf.train.SessionRunHook):
    """Rank 0's variables (possibly restored) to every worker once the session exists.

    Horovod's own BroadcastGlobalVariablesHook is defined only where tf.estimator or TF 1's
    tf.train.SessionRunHook exists, which TensorFlow 2.16 and later have not."""

    def __init__(self, hvd):
        self._hvd = hvd

    def begin(self):
        self._broadcast = self._hvd.broadcast_global_variables(0)  # Horovod: from rank 0.

    def after_create_session(self, session, coord):
        session.run(self._broadcast)


class _StableGradientNames(tf.train.Optimizer):
    """Names each gradient after its variable.

    Horovod pairs the tensors it reduces across workers by name, and TF 1.15's recompute_grad
    builds its gradients in an order (from a set of variables) that differs from process to
    process; with the default names the workers wait for each other's tensors forever.
    """

    def __init__(self, optimizer):
        super(_StableGradientNames, self).__init__(False, optimizer.get_name())
        self._optimizer = optimizer

    def compute_gradients(self, *args, **kwargs):
        return [(g if g is None else tf.identity(g, name='gradient/' + v.op.name), v)
                for g, v in self._optimizer.compute_gradients(*args, **kwargs)]

    def apply_gradients(self, *args, **kwargs):
        return self._optimizer.apply_gradients(*args, **kwargs)

    def get_slot(self, *args, **kwargs):
        return self._optimizer.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        return self._optimizer.get_slot_names(*args, **kwargs)

    def variables(self):
        return self._optimizer.variables()
