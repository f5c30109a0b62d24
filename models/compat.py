"""What differs between TensorFlow 1.15 and TensorFlow 2.x run in tf.compat.v1 graph mode.

Every other module takes `tf` from here and never looks at the version: `tf` is the v1 API on
every stack (`tensorflow.compat.v1`, with the v2 behaviours switched off on 2.x, and from 2.16
its layers served by Keras 2, the tf-keras package). The rest is whether contrib's recomputation
(`models.recompute` uses it where it exists) and tf.estimator exist, a GPU query that creates no
device, and silencing the noise 2.x makes on import and for every `tf.layers` call.
"""
import importlib.util
import os
import warnings

# From TensorFlow 2.16 tf.keras is Keras 3, and tf.compat.v1.layers (the product's tf.layers)
# works only with Keras 2: the tf-keras package, which TensorFlow serves where this is set
# before it first loads Keras (TensorFlow 2.15 too: it then needs tf-keras, so only where it is
# installed; TensorFlow 1.15 ignores it).
if importlib.util.find_spec('tf_keras'):
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import tensorflow as _tensorflow  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

VERSION = _tensorflow.__version__
_RELEASE = tuple(int(part) for part in VERSION.split('.')[:2])
TF2 = _RELEASE >= (2, 0)
KERAS_3 = _RELEASE >= (2, 16)  # tf.keras is Keras 3, tf.compat.v1.layers needs tf-keras
ESTIMATOR = not KERAS_3  # tf.estimator was removed in TensorFlow 2.16 too
ESTIMATOR_STACKS = 'TensorFlow 1.15 and 2.15 (the .venv and .venv-tf2 stacks)'


class LegacyKerasError(ImportError):
    """tf.compat.v1.layers is not served by Keras 2 in this process (one line, what to do)."""


def _check_legacy_keras():
    verbosity = tf.logging.get_verbosity()
    tf.logging.set_verbosity(tf.logging.ERROR)  # TensorFlow warns about it too, less clearly
    try:
        tf.layers.dense
    except ImportError:  # TF_USE_LEGACY_KERAS is set, tf-keras is not installed
        raise LegacyKerasError(
            'TF_USE_LEGACY_KERAS is set, and TensorFlow %s then needs the tf-keras package: pip '
            'install tf-keras==%s --no-deps (see requirements-tf221-keras.txt)%s' % (
                VERSION, VERSION, '' if KERAS_3 else ', or unset it'))
    except AttributeError:  # TF_USE_LEGACY_KERAS set to something else than 1
        raise LegacyKerasError(
            'TensorFlow %s serves tf.compat.v1.layers from Keras 3 here (TF_USE_LEGACY_KERAS=%s):'
            ' unset it or set it to 1' % (VERSION, os.environ.get('TF_USE_LEGACY_KERAS')))
    finally:
        tf.logging.set_verbosity(verbosity)


if TF2:
    _check_legacy_keras()
    _verbosity = tf.logging.get_verbosity()
    tf.logging.set_verbosity(tf.logging.ERROR)  # disable_v2_behavior logs a deprecation notice
    tf.disable_v2_behavior()
    tf.logging.set_verbosity(_verbosity)
    # Keras 2's tf.compat.v1.layers warn on every call that they are deprecated; they are what
    # the product is built on (see README, "Supported stacks").
    warnings.filterwarnings('ignore', message=r'`tf\.layers\.\w+` is deprecated',
                            category=UserWarning)


def gpu_available():
    """Whether this process sees a GPU, without creating a device (and so without taking GPU
    memory, unlike `tf.test.is_gpu_available`)."""
    return bool(tf.config.experimental.list_physical_devices('GPU'))


def contrib_recompute_grad():
    """`tf.contrib.layers.recompute_grad` on TF 1.15; None on 2.x, where contrib is gone."""
    if TF2:
        return None
    from tensorflow.contrib.layers import recompute_grad
    return recompute_grad


def conv2d_gradient():
    """TensorFlow's registered gradient function of Conv2D: (op, grad) -> [input gradient,
    filter gradient]."""
    from tensorflow.python.ops import nn_grad
    return nn_grad._Conv2DGrad


# XLA auto-clustering for every session of the process, on the CPU too (whose switch is
# --tf_xla_cpu_global_jit); what a GPU pipeline's TF_XLA_FLAGS or global_jit_level turns on.
XLA_FLAGS = ('--tf_xla_auto_jit=2', '--tf_xla_cpu_global_jit')


def enable_auto_clustering(every_op=False):
    """Turns XLA auto-clustering on for the sessions this process creates from now on;
    `every_op`: clusters of any size compile (by default those under 4 ops stay with
    TensorFlow's kernels), and at their first run (by default a cluster is compiled once it
    has run a few times, TensorFlow's kernels running it until then), for a graph whose every
    op needs XLA. TensorFlow reads TF_XLA_FLAGS once, at its first session: on 1.15 that is
    the only switch (so this must come before any session); 2.x also has setters that act
    after it."""
    flags = list(XLA_FLAGS) + (['--tf_xla_min_cluster_size=1',
                                '--tf_xla_enable_lazy_compilation=false'] if every_op else [])
    os.environ['TF_XLA_FLAGS'] = ' '.join(  # the flags given last win
        os.environ.get('TF_XLA_FLAGS', '').split() + flags)
    if TF2:
        from tensorflow.python.client import pywrap_tf_session
        pywrap_tf_session.TF_SetXlaAutoJitMode('2')
        pywrap_tf_session.TF_SetTfXlaCpuGlobalJit(True)
        if every_op:
            pywrap_tf_session.TF_SetXlaMinClusterSize(1)
            pywrap_tf_session.TF_SetXlaEnableLazyCompilation(False)


def auto_clustering_requested():
    """Whether TF_XLA_FLAGS turns XLA auto-clustering on (--tf_xla_auto_jit other than 0/-1)."""
    jit = [flag.split('=', 1)[1] for flag in os.environ.get('TF_XLA_FLAGS', '').split()
           if flag.startswith('--tf_xla_auto_jit=')]
    return bool(jit) and jit[-1] not in ('0', '-1', 'off')
