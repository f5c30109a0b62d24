"""Concat-free dense layers with shared batch statistics: the `efficient='shared'` training graph.

Two exact identities remove the concatenation of earlier features, forward and backward:
1. Batch norm is per channel and ReLU element-wise, so a layer's `conv(relu(bn(concat_j f_j)))`
   is `sum_j conv_{W[s_j]}(relu(bn_{s_j}(f_j)))` over the channel slices s_j of the earlier
   feature maps (a transition's 2x2 average pool commutes with its 1x1 convolution, so it pools
   each slice first; the final norm's global pool is taken slice by slice).
2. In training mode every later layer normalises feature map f_j with the same batch mean and
   variance: `moments` computes them once, when f_j is produced, and each consumer applies its
   own gamma/beta slice. Their gradients flow back through `moments` once per feature map.

`consume` builds one consumer (a dense layer, transition or the final norm) as a
`tf.custom_gradient` function of the earlier features, their statistics and the consumer's
parameters. Only its output is kept for the backward pass; there the consumer is recomputed one
chunk (a group of consecutive feature maps) at a time, with control dependencies that keep one
chunk's activations alive, and each feature's gradient is added to the running sum the later
consumers passed down (`passthrough`, as in the recompute_grad mode).
"""
from models import layers as L
from models.compat import tf

# Dense-layer outputs recomputed together as one chunk: fewer, larger operations (graph size
# and build time grow with the number of chunks), at most 4k channels (a bottleneck's width).
CHUNK_LAYERS = 4


def moments(x, data_format):
    """(mean, biased variance) of each channel of `x` in the statistics' dtype.

    The backward pass recomputes x - mean from x (kept anyway as a feature) instead of storing
    the centred copy `tf.nn.moments` would keep for every feature map.
    """
    dtype = L.stats_dtype(x.dtype)
    axes = [0] + L.spatial_axes(data_format)

    @tf.custom_gradient
    def forward(x):
        wide = tf.cast(x, dtype)
        mean = tf.reduce_mean(wide, axes)
        variance = tf.reduce_mean(tf.squared_difference(wide, L.per_channel(mean, data_format)),
                                  axes)

        def backward(d_mean, d_variance):
            n = L.values_per_channel(x, data_format)
            d_mean = tf.zeros_like(mean) if d_mean is None else d_mean
            d_variance = tf.zeros_like(variance) if d_variance is None else d_variance
            # Not before the gradients exist: x - mean needs only forward values, and would
            # otherwise be computed early and held, a second copy of every feature map.
            with tf.control_dependencies([d_mean, d_variance]):
                centred = tf.cast(x, dtype) - L.per_channel(mean, data_format)
            dx = (centred * L.per_channel(2.0 * d_variance / n, data_format)
                  + L.per_channel(d_mean / n, data_format))
            return tf.cast(dx, x.dtype)

        return (mean, variance), backward

    return forward(x)


def consume(features, stats, gamma, beta, kernel, groups, data_format, pool=False, tail=None,
            tail_args=(), passthrough=False):
    """One consumer of `features` without their concatenation; returns a list of tensors.

    Computes `relu(batch_norm(concat(features)))` slice by slice with the shared `stats` (one
    (mean, variance) pair per feature) and the full-width `gamma`/`beta`, then per chunk of
    `groups` (lists of consecutive feature indices that partition the features):
    - `kernel` (HWIO, full input width): an optional 2x2 average pool (`pool`), then the
      convolution by the chunk's kernel rows; the chunks' results are summed;
    - `kernel` None: the global average pool; the chunks' results are concatenated.
    `tail(summed, *tail_args)` then returns a list whose first tensor is the output and whose
    others (e.g. a batch norm's statistics) get no gradient. The result is the tail's list (or
    `[summed]`), followed with `passthrough` by identities of the features, which later
    consumers take instead so that each feature's gradient is one running sum.
    """
    n = len(features)
    widths = [int(f.shape[L.channel_axis(data_format)]) for f in features]
    offsets = [0]
    for group in groups:
        offsets.append(offsets[-1] + sum(widths[i] for i in group))
    has_kernel = kernel is not None
    weights = [gamma, beta] + ([kernel] if has_kernel else [])
    means, variances = [s[0] for s in stats], [s[1] for s in stats]

    def chunk(j, feats, mean, var, params):
        """Chunk j's contribution, and what it read: [input, mean, variance, gamma, beta(,
        kernel)] of the chunk, each made here to differentiate by (tf.gradients walks every
        consumer of what it differentiates by, and a feature's span the whole graph)."""
        idx, lo, hi = groups[j], offsets[j], offsets[j + 1]
        x = concat([feats[i] for i in idx], data_format) if len(idx) > 1 else tf.identity(
            feats[idx[0]])
        # The statistics are functions of the features: differentiated together, a feature's
        # gradient would also take the path through its statistics, which `moments` adds
        # again. Behind stop_gradient, each gets its own partial derivative.
        read = [x] + [tf.stop_gradient(concat(s, 0)) for s in ([mean[i] for i in idx],
                                                                [var[i] for i in idx])]
        read += [params[0][lo:hi], params[1][lo:hi]]
        r = tf.nn.relu(L.scale_and_shift(*read, data_format=data_format))
        if not has_kernel:
            return tf.reduce_mean(r, L.spatial_axes(data_format)), read
        if pool:
            r = tf.nn.avg_pool(r, _window(data_format), _window(data_format), 'VALID',
                               data_format=L.nn_format(data_format))
        read.append(params[2][:, :, lo:hi, :])
        return conv2d(r, read[-1], data_format), read

    def all_chunks(feats, mean, var, params, gate):
        """The chunks one after the other (each waits for the previous one's result)."""
        parts, total = [], None
        for j in range(len(groups)):
            with tf.control_dependencies(gate):
                part, _ = chunk(j, feats, mean, var, params)
            if has_kernel:
                total = part if total is None else total + part
                gate = [total]
            else:
                parts.append(part)
                gate = [part]
        return total if has_kernel else tf.concat(parts, 1)

    @tf.custom_gradient
    def forward(*args):
        feats, mean, var = args[:n], args[n:2 * n], args[2 * n:3 * n]
        params, extra = args[3 * n:3 * n + len(weights)], args[3 * n + len(weights):]
        summed = all_chunks(feats, mean, var, params, [])
        outputs = list(tail(summed, *extra)) if tail else [summed]
        n_outputs = len(outputs)
        if passthrough:
            outputs += [tf.identity(f) for f in feats]

        def backward(*grads):
            # Built outside the caller's control dependencies (typically every moving-average
            # update, around minimize()): each op made under them gets every one of them as a
            # control input, 50k ops x 200 updates at BC-100. The gradients this returns are
            # still consumed under them.
            with tf.control_dependencies(None):
                return gradients(grads)

        def gradients(grads):
            d_out, d_pass = grads[0], grads[n_outputs:]
            # One op to wait for: every op made under control_dependencies gets each of them
            # as a control input, and a layer receives one gradient per earlier feature.
            gate = [tf.group(*[g for g in grads if g is not None])]
            d_extra = [None] * len(extra)
            if tail:
                # The tail's input again (chunk by chunk), once the output's gradient exists.
                again = all_chunks(feats, mean, var, params, gate)
                copies = [tf.identity(t) for t in extra]
                floats = [i for i, t in enumerate(extra) if t.dtype.is_floating]
                d = tf.gradients(tail(again, *copies)[0], [again] + [copies[i] for i in floats],
                                 d_out)
                d_summed = d[0]
                for i, g in zip(floats, d[1:]):
                    d_extra[i] = g
                gate = [d_summed]
            else:
                d_summed = d_out
            d_feats, d_mean, d_var = [None] * n, [None] * n, [None] * n
            d_params = [[] for _ in weights]
            for j, idx in enumerate(groups):
                with tf.control_dependencies(gate):
                    part, read = chunk(j, feats, mean, var, params)
                d_part = d_summed if has_kernel else d_summed[:, offsets[j]:offsets[j + 1]]
                d = tf.gradients(part, read, d_part)
                sizes = [widths[i] for i in idx]
                for target, g, axis in ((d_feats, d[0], L.channel_axis(data_format)),
                                        (d_mean, d[1], 0), (d_var, d[2], 0)):
                    target[idx[0]:idx[-1] + 1] = tf.split(g, sizes, axis) if len(idx) > 1 else [g]
                for m, g in enumerate(d[3:]):
                    d_params[m].append(g)
                gate = [tf.group(d[0], *d[3:])]
            d_feats = [g if p is None else p + g for g, p in zip(d_feats, d_pass or [None] * n)]
            d_params = [tf.concat(d_params[0], 0), tf.concat(d_params[1], 0)] + (
                [tf.concat(d_params[2], 2)] if has_kernel else [])
            return d_feats + d_mean + d_var + d_params + d_extra

        return outputs, backward

    return forward(*(list(features) + means + variances + weights + list(tail_args)))


def conv2d(x, kernel, data_format):
    """Stride-1 'SAME' convolution by an HWIO kernel with odd sides.

    With channels_last, no Conv2DBackpropFilter/Input: on the CPU they allocate work buffers
    (15-30 MiB at BC-100 b64, whatever the batch) larger than any tensor of a dense layer's
    backward pass. A 1x1 kernel is a MatMul. A larger kernel's input gradient is the forward
    convolution by the flipped kernel, and its kernel gradient one MatMul per kernel tap, of
    the input by a shifted copy of the output gradient, one tap after the other. (channels_first
    is for GPUs, whose convolutions are left to cuDNN.)
    """
    fmt = L.nn_format(data_format)
    height, width, in_channels, filters = [int(d) for d in kernel.shape]
    if data_format == L.CHANNELS_FIRST:
        return tf.nn.conv2d(x, kernel, [1, 1, 1, 1], 'SAME', data_format=fmt)
    if height * width == 1:  # a MatMul, whose gradients are MatMuls of exactly their size
        rows = tf.matmul(tf.reshape(x, [-1, in_channels]), tf.reshape(kernel, [in_channels,
                                                                                filters]))
        return tf.reshape(rows, tf.concat([tf.shape(x)[:3], [filters]], 0))

    @tf.custom_gradient
    def forward(x, kernel):
        def backward(dy):
            # The input gradient as a forward convolution by the flipped, transposed kernel
            # (exact for odd sides and 'SAME'): Conv2DBackpropInput allocates a work buffer too.
            flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
            dx = tf.nn.conv2d(dy, flipped, [1, 1, 1, 1], 'SAME', data_format=fmt)
            # y[p] = sum_t x[p + t] W[t] over the taps t, so dW[t] = sum_q x[q]^T dy[q - t]:
            # dy padded by the kernel's half-size and sliced at the tap's offset.
            ph, pw = height // 2, width // 2
            padded = tf.pad(dy, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
            rows = tf.reshape(x, [-1, in_channels])
            size = tf.shape(x)[1:3]
            taps, gate = [], [dx]
            for a in range(height):
                for b in range(width):
                    with tf.control_dependencies(gate):
                        shifted = tf.slice(padded, [0, 2 * ph - a, 2 * pw - b, 0],
                                           tf.concat([[-1], size, [-1]], 0))
                        taps.append(tf.matmul(rows, tf.reshape(shifted, [-1, filters]),
                                              transpose_a=True))
                    gate = taps[-1:]
            return dx, tf.reshape(tf.stack(taps), kernel.shape)

        return tf.nn.conv2d(x, kernel, [1, 1, 1, 1], 'SAME', data_format=fmt), backward

    return forward(x, kernel)


def groups_of(count, size):
    """Feature indices 0..count-1 in chunks: feature 0 (a block's input) alone, then the
    dense layers' outputs `size` at a time."""
    return [[0]] + [list(range(i, min(i + size, count))) for i in range(1, count, size)]


def concat(tensors, axis_or_format):
    if len(tensors) == 1:
        return tensors[0]
    axis = axis_or_format if isinstance(axis_or_format, int) else L.channel_axis(axis_or_format)
    return tf.concat(tensors, axis)


def _window(data_format):
    return [1, 1, 2, 2] if data_format == L.CHANNELS_FIRST else [1, 2, 2, 1]
