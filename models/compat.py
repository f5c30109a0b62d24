"""What differs between TensorFlow 1.15 and TensorFlow 2.x run in tf.compat.v1 graph mode.

Every other module takes `tf` from here and never looks at the version: `tf` is the v1 API on
both stacks (`tensorflow.compat.v1`, with the v2 behaviours switched off on 2.x). The rest is
whether contrib's recomputation exists (`models.recompute` uses it where it does), a GPU query that
creates no device, and silencing the noise 2.x makes on import and for every `tf.layers` call.
"""
import warnings

import tensorflow as _tensorflow
import tensorflow.compat.v1 as tf

VERSION = _tensorflow.__version__
TF2 = int(VERSION.split('.')[0]) >= 2

if TF2:
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
