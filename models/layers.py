"""Building blocks shared by every DenseNet variant: batch norm, convolution, dropout and fp32
master weights (the recomputation wrapper is `models.recompute`).

Batch norm is written here (on `tf.nn.fused_batch_norm`) instead of taken from `tf.layers` so that a
recomputed layer can normalise with batch statistics again without registering a second set of
moving-average updates: the caller says whether this call may update the statistics.
"""
import weakref

import numpy as np

from models import compat
from models.compat import tf

BN_MOMENTUM = 0.9
# Keras' DenseNet epsilon, so that imported tf.keras.applications weights give the same outputs.
BN_EPSILON = 1.001e-5

CHANNELS_FIRST = 'channels_first'
CHANNELS_LAST = 'channels_last'
DATA_FORMATS = (CHANNELS_FIRST, CHANNELS_LAST)


def channel_axis(data_format):
    return 1 if data_format == CHANNELS_FIRST else 3


def spatial_axes(data_format):
    return [2, 3] if data_format == CHANNELS_FIRST else [1, 2]


def nn_format(data_format):
    """'NCHW' or 'NHWC', as tf.nn ops name `data_format`."""
    return 'NCHW' if data_format == CHANNELS_FIRST else 'NHWC'


def per_channel(v, data_format):
    """A [C] vector shaped to broadcast over the channel axis of a 4-D tensor."""
    if data_format == CHANNELS_LAST:
        return v  # broadcasts over the last axis as it is
    return tf.reshape(v, constant([1, -1, 1, 1]))


_CONSTANTS = weakref.WeakKeyDictionary()  # graph -> {(dtype, value): tensor}


def constant(value, dtype=tf.int32):
    """One Const op per graph for each value (shapes, axes, offsets): the deep graphs of
    `models.shared` would otherwise hold thousands of copies of the same few."""
    cache = _CONSTANTS.setdefault(tf.get_default_graph(), {})
    key = (dtype, repr(value))
    if key not in cache:
        with tf.control_dependencies(None), tf.name_scope('constants/'):
            cache[key] = tf.constant(value, dtype)
    return cache[key]


def values_per_channel(x, data_format):
    """n, the number of values per channel of x: a Python float where x's shape is known (no
    ops), else a tensor in the statistics' dtype."""
    axis = channel_axis(data_format)
    if x.shape.is_fully_defined():
        shape = x.shape.as_list()
        return float(np.prod(shape) // shape[axis])
    n = tf.size(x, out_type=tf.int64) // tf.cast(tf.shape(x)[axis], tf.int64)
    return tf.cast(n, stats_dtype(x.dtype))


def default_data_format(gpu=None):
    """`channels_first` on a GPU, else `channels_last` (TF 1.15 has no NCHW CPU convolution).

    `gpu` None asks whether this process sees one, without creating a device (so no GPU memory
    is taken here).
    """
    if gpu is None:
        gpu = compat.gpu_available()
    return CHANNELS_FIRST if gpu else CHANNELS_LAST


def max_feature_map(x, data_format, name='mfm'):
    """Max-Feature-Map (Wu et al., Light CNN): the element-wise max of the two channel halves.

    An activation that halves the channels (an even count: `DenseNetCreator` checks its plan).
    """
    with tf.name_scope(name):
        first, second = tf.split(x, 2, axis=channel_axis(data_format))
        return tf.maximum(first, second)


def fp32_master_weights(getter, name, shape=None, dtype=None, *args, **kwargs):
    """Custom getter: variables requested in float16 are stored in float32 and cast on read.

    Optimizer updates then happen on float32 weights, which keeps small updates from vanishing.
    """
    if dtype in (tf.float16, tf.bfloat16):
        var = getter(name, shape, tf.float32, *args, **kwargs)
        return tf.cast(var, dtype, name=name + '/cast')
    return getter(name, shape, dtype, *args, **kwargs)


def stats_dtype(dtype):
    """Batch-norm statistics and affine parameters: float32, or float64 in a float64 model."""
    return tf.float64 if dtype == tf.float64 else tf.float32


def bn_variables(channels, name, dtype, trainable=True):
    """gamma, beta, moving_mean, moving_variance of the batch norm `name` (float32, or float64
    in a float64 model): the one place their names, shapes and initial values are set."""
    dtype = stats_dtype(dtype)
    with tf.variable_scope(name):
        gamma = tf.get_variable('gamma', [channels], dtype, tf.ones_initializer(),
                                trainable=trainable)
        beta = tf.get_variable('beta', [channels], dtype, tf.zeros_initializer(),
                               trainable=trainable)
        # Non-trainable variables are not watched by the recomputation's gradient tape, so reading
        # them in the forward pass only does not upset `recompute_grad`'s variable check.
        moving_mean = tf.get_variable('moving_mean', [channels], dtype, tf.zeros_initializer(),
                                      trainable=False)
        moving_variance = tf.get_variable('moving_variance', [channels], dtype,
                                          tf.ones_initializer(), trainable=False)
    return gamma, beta, moving_mean, moving_variance


def update_moving_averages(moving_mean, moving_variance, mean, variance):
    """One momentum update of each moving statistic, added to `tf.GraphKeys.UPDATE_OPS`.

    `variance` is the unbiased batch variance (as tf.keras averages it). A non-finite statistic
    (an overflowing fp16 step, a bad batch: steps that are skipped) leaves that channel's
    average as it was.
    """
    decay = 1.0 - BN_MOMENTUM
    for var, value in ((moving_mean, mean), (moving_variance, variance)):
        change = tf.where(tf.is_finite(value), (var - value) * decay, tf.zeros_like(var))
        update = var.assign_sub(change, read_value=False)
        tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update)


def normalize_batch(x, gamma, beta, data_format):
    """Training-mode batch norm: (output, batch mean, unbiased batch variance).

    `tf.nn.fused_batch_norm` (which has no float64 kernel), or the same arithmetic in plain ops
    for a float64 model.
    """
    if x.dtype != tf.float64:
        fmt = nn_format(data_format)
        # The returned variance is the unbiased one, as tf.keras uses for its moving variance.
        return tf.nn.fused_batch_norm(x, gamma, beta, epsilon=BN_EPSILON, data_format=fmt,
                                      is_training=True)
    axes = [0] + spatial_axes(data_format)
    mean, variance = tf.nn.moments(x, axes)
    y = scale_and_shift(x, mean, variance, gamma, beta, data_format)
    return y, mean, variance * unbiased_factor(x, data_format)


def scale_and_shift(x, mean, variance, gamma, beta, data_format):
    """(x - mean) / sqrt(variance + eps) * gamma + beta per channel, as one multiply-add in
    x's dtype (the per-channel factors are computed in the statistics' dtype)."""
    scale = gamma * tf.rsqrt(variance + BN_EPSILON)
    shift = beta - mean * scale
    return (x * per_channel(tf.cast(scale, x.dtype), data_format)
            + per_channel(tf.cast(shift, x.dtype), data_format))


def unbiased_factor(x, data_format):
    """n / (n - 1) for the n values per channel of x (1 when n is 1), as fused batch norm."""
    n = values_per_channel(x, data_format)
    if isinstance(n, float):
        return n / max(n - 1.0, 1.0)
    return n / tf.maximum(n - 1, 1)


def batch_norm(x, training, data_format, name, update_statistics=True, trainable=True):
    """Batch normalisation over the channel axis; statistics and affine parameters are float32
    (float64 in a float64 model).

    In training mode the batch statistics normalise `x`; when `update_statistics` is set, one
    moving-average update per statistic is added to `tf.GraphKeys.UPDATE_OPS`.
    """
    channels = int(x.shape[channel_axis(data_format)])
    gamma, beta, moving_mean, moving_variance = bn_variables(channels, name, x.dtype, trainable)
    if not training:
        if x.dtype == tf.float64:
            return scale_and_shift(x, moving_mean, moving_variance, gamma, beta, data_format)
        fmt = nn_format(data_format)
        y, _, _ = tf.nn.fused_batch_norm(x, gamma, beta, mean=moving_mean,
                                         variance=moving_variance, epsilon=BN_EPSILON,
                                         data_format=fmt, is_training=False)
        return y
    y, mean, variance = normalize_batch(x, gamma, beta, data_format)
    if update_statistics:
        update_moving_averages(moving_mean, moving_variance, mean, variance)
    return y


def conv2d(x, filters, kernel_size, data_format, name, strides=1, padding='same', trainable=True):
    """Bias-free convolution with He-normal initialisation, as in the DenseNet paper."""
    return tf.layers.conv2d(x, filters, kernel_size, strides=strides, padding=padding,
                            data_format=data_format, use_bias=False, trainable=trainable,
                            kernel_initializer=tf.initializers.he_normal(), name=name)


def dropout(x, rate, seed):
    """Inverted dropout whose mask is a pure function of `seed` (an int64 [2] tensor).

    A recomputed layer is run twice; because the mask comes from a stateless op fed by a tensor the
    forward pass produced, the recomputation drops exactly the same units.
    """
    keep = tf.random.stateless_uniform(tf.shape(x), seed, dtype=tf.float32) >= rate
    return x * tf.cast(keep, x.dtype) * tf.cast(1.0 / (1.0 - rate), x.dtype)


def new_dropout_seed():
    """A fresh [2] int64 seed per step for `dropout`."""
    return tf.random.uniform([2], minval=0, maxval=2 ** 62, dtype=tf.int64)
