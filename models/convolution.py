"""Stride-1 'SAME' convolutions by HWIO kernels with odd sides, whose gradients are written out:
the shared-statistics mode (`models.shared`) differentiates its layers by hand, chunk by chunk.

With channels_last nothing here uses Conv2DBackpropFilter/Input: on the CPU they allocate work
buffers (15-30 MiB at DenseNet-BC-100 batch 64, whatever the layer) larger than any tensor of a
dense layer's backward pass. A 1x1 kernel is a MatMul both ways. A larger kernel's input
gradient is the forward convolution by the flipped kernel, and its kernel gradient one MatMul
per kernel tap, of the input by a shifted copy of the output gradient, one tap after the other.
channels_first is for GPUs, whose convolutions and gradients are left to cuDNN.
"""
from models import layers as L
from models.compat import tf


def forward(x, kernel, data_format):
    """conv(x, kernel), stride 1, 'SAME'."""
    if _is_pointwise(kernel) and data_format == L.CHANNELS_LAST:
        return _from_rows(tf.matmul(_rows(x), _matrix(kernel)), x, int(kernel.shape[3]))
    return tf.nn.conv2d(x, kernel, [1, 1, 1, 1], 'SAME', data_format=L.nn_format(data_format))


def input_gradient(dy, kernel, data_format, input_shape):
    """d conv(x, kernel) / dx, given the output's gradient `dy` and x's shape."""
    fmt = L.nn_format(data_format)
    if data_format == L.CHANNELS_FIRST:
        return tf.nn.conv2d_backprop_input(input_shape, kernel, dy, [1, 1, 1, 1], 'SAME',
                                           data_format=fmt)
    if _is_pointwise(kernel):
        return _from_rows(tf.matmul(_rows(dy), _matrix(kernel), transpose_b=True), dy,
                          int(kernel.shape[2]))
    # Exact for odd sides and 'SAME': the forward convolution by the flipped, transposed kernel.
    flipped = tf.transpose(tf.reverse(kernel, L.constant([0, 1])), L.constant([0, 1, 3, 2]))
    return tf.nn.conv2d(dy, flipped, [1, 1, 1, 1], 'SAME', data_format=fmt)


def kernel_gradient(x, dy, kernel, data_format, gate=()):
    """d conv(x, kernel) / dkernel, given the output's gradient `dy`; the taps of a larger
    kernel one after the other, the first after `gate`."""
    if data_format == L.CHANNELS_FIRST:
        return tf.nn.conv2d_backprop_filter(x, tf.shape(kernel), dy, [1, 1, 1, 1], 'SAME',
                                            data_format=L.nn_format(data_format))
    height, width, in_channels, filters = [int(d) for d in kernel.shape]
    rows = _rows(x)
    if height * width == 1:
        return tf.reshape(tf.matmul(rows, _rows(dy), transpose_a=True),
                          L.constant(kernel.shape.as_list()))
    # y[p] = sum_t x[p + t] W[t] over the taps t, so dW[t] = sum_q x[q]^T dy[q - t]: dy padded
    # by the kernel's half-size and sliced at the tap's offset.
    ph, pw = height // 2, width // 2
    padded = tf.pad(dy, L.constant([[0, 0], [ph, ph], [pw, pw], [0, 0]]))
    if x.shape[1:3].is_fully_defined():
        size = L.constant([-1] + x.shape[1:3].as_list() + [-1])
    else:
        size = tf.concat([[-1], tf.shape(x)[1:3], [-1]], 0)
    taps, gate = [], list(gate)
    for a in range(height):
        for b in range(width):
            with tf.control_dependencies(gate):
                shifted = tf.slice(padded, L.constant([0, 2 * ph - a, 2 * pw - b, 0]), size)
                taps.append(tf.matmul(rows, _rows(shifted), transpose_a=True))
            gate = taps[-1:]
    return tf.reshape(tf.stack(taps), L.constant(kernel.shape.as_list()))


class Chunked(object):
    """The convolution of an input that arrives in chunks of channels (`widths`, in order):
    the sum of each chunk's convolution by its rows of `kernel`, with each chunk's gradients.

    A pointwise kernel on channels_last is a matrix, split once: each chunk is one MatMul
    forward and two backward, and the output gradient is reshaped once for all chunks.
    """

    def __init__(self, kernel, widths, data_format):
        self.fmt, self.shape = data_format, kernel.shape.as_list()
        self.rows = _is_pointwise(kernel) and data_format == L.CHANNELS_LAST
        whole = _matrix(kernel) if self.rows else kernel
        self.axis = 0 if self.rows else 2
        self.kernels = (tf.split(whole, L.constant(widths), L.constant(self.axis))
                        if len(widths) > 1 else [whole])
        self._dy = {}

    def contribution(self, c, x):
        """Chunk c's part of the output (rows of pixels for a pointwise kernel: `output`)."""
        if self.rows:
            return tf.matmul(_rows(x), self.kernels[c])
        return forward(x, self.kernels[c], self.fmt)

    def output(self, total, like):
        """The summed contributions as the output of inputs shaped like `like`."""
        return _from_rows(total, like, self.shape[3]) if self.rows else total

    def gradients(self, c, x, dy):
        """(d loss / d x, d loss / d chunk c's kernel rows), given the output's gradient."""
        if not self.rows:
            dx = input_gradient(dy, self.kernels[c], self.fmt, tf.shape(x))
            return dx, kernel_gradient(x, dy, self.kernels[c], self.fmt, gate=[dx])
        if dy not in self._dy:
            self._dy[dy] = _rows(dy)
        dy_rows = self._dy[dy]
        dx = _from_rows(tf.matmul(dy_rows, self.kernels[c], transpose_b=True), x,
                        int(x.shape[-1]))
        return dx, tf.matmul(_rows(x), dy_rows, transpose_a=True)

    def kernel_gradient(self, parts):
        """The whole kernel's gradient from the chunks' (in order)."""
        whole = tf.concat(parts, L.constant(self.axis)) if len(parts) > 1 else parts[0]
        return tf.reshape(whole, L.constant(self.shape)) if self.rows else whole


def conv2d(x, kernel, data_format):
    """`forward` differentiated by `input_gradient` and `kernel_gradient`."""
    @tf.custom_gradient
    def convolve(x, kernel):
        def backward(dy):
            dx = input_gradient(dy, kernel, data_format, tf.shape(x))
            return dx, kernel_gradient(x, dy, kernel, data_format, gate=[dx])
        return forward(x, kernel, data_format), backward
    return convolve(x, kernel)


def _is_pointwise(kernel):
    return int(kernel.shape[0]) * int(kernel.shape[1]) == 1


def _rows(x):
    """channels_last x as a matrix of one row per pixel."""
    return tf.reshape(x, L.constant([-1, int(x.shape[-1])]))


def _matrix(kernel):
    return tf.reshape(kernel, L.constant([int(kernel.shape[2]), int(kernel.shape[3])]))


def _from_rows(rows, like, channels):
    """Rows of one pixel each back into `like`'s batch and spatial shape, `channels` wide."""
    if like.shape[:3].is_fully_defined():
        return tf.reshape(rows, L.constant(like.shape[:3].as_list() + [channels]))
    return tf.reshape(rows, tf.concat([tf.shape(like)[:3], [channels]], 0))
