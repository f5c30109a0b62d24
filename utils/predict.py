"""Load a frozen DenseNet graph and classify images with it (TF's own PNG/JPEG decoders)."""
import contextlib
import os

import numpy as np
from google.protobuf.message import DecodeError

from models import compat
from models.compat import tf
from utils import files
from utils.errors import UsageError, first_line
from utils.export import INPUT, LOGITS, PIXEL_RANGE, PROBABILITIES

EIGHT_BIT = 255.0  # what PNG/JPEG/GIF/BMP pixels run to; a graph without PIXEL_RANGE takes them


class Predictor(object):
    """Runs a frozen graph written by export.py on batches of raw NHWC pixels, which run from 0
    to `pixel_max` (the graph's PIXEL_RANGE: the digits' 16, else 255)."""

    def __init__(self, path):
        graph_def = tf.GraphDef()
        try:
            data = files.read_bytes(path, 'graph')
            with _quiet_stderr():  # protobuf's C++ parser logs there
                graph_def.ParseFromString(data)
        except (OSError, DecodeError) as e:
            raise UsageError('%s: not a readable frozen graph (%s)' % (
                path, getattr(e, 'strerror', None) or e))
        _check_layout(graph_def, path)
        self.graph = tf.Graph()
        try:
            with self.graph.as_default():
                tf.import_graph_def(graph_def, name='')
        except (ValueError, TypeError, tf.errors.OpError) as e:
            raise UsageError('%s: not a graph this TensorFlow can run (%s)' % (
                path, first_line(e)))
        names = set(op.name for op in self.graph.get_operations())
        missing = [n for n in (INPUT, LOGITS, PROBABILITIES) if n not in names]
        if missing:
            raise UsageError('%s: not a graph written by export.py (no %s)' % (
                path, ', '.join(missing)))
        self.input = self.graph.get_tensor_by_name(INPUT + ':0')
        if self.input.op.type != 'Placeholder' or self.input.shape.ndims != 4 or \
                not self.input.shape[1:].is_fully_defined():
            raise UsageError('%s: not a graph written by export.py (its %r is a %s of shape %s, '
                             'not a placeholder of images)' % (path, INPUT, self.input.op.type,
                                                               self.input.shape))
        self.logits = self.graph.get_tensor_by_name(LOGITS + ':0')
        self.probabilities = self.graph.get_tensor_by_name(PROBABILITIES + ':0')
        self.image_shape = tuple(self.input.shape.as_list()[1:])
        self.session = tf.Session(graph=self.graph)
        self.pixel_max = (float(self.session.run(PIXEL_RANGE + ':0')[1]) if PIXEL_RANGE in names
                          else EIGHT_BIT)  # export.py before it recorded the range

    def read(self, paths):
        """The images in files `paths`, as this graph takes them (`read_images`)."""
        return read_images(paths, self.image_shape, self.pixel_max)

    def logits_of(self, images):
        return self.session.run(self.logits, {self.input: images})

    def top_k(self, images, k=5):
        """[(classes, probabilities)] per image, most likely first."""
        probabilities = self.session.run(self.probabilities, {self.input: images})
        order = np.argsort(-probabilities, axis=1)[:, :k]
        return [(row, probabilities[i, row]) for i, row in enumerate(order)]


# The formats TensorFlow decodes, by their first bytes.
FORMATS = ((b'\x89PNG\r\n\x1a\n', 'PNG'), (b'\xff\xd8\xff', 'JPEG'), (b'GIF87a', 'GIF'),
           (b'GIF89a', 'GIF'), (b'BM', 'BMP'))


def _check_layout(graph_def, path):
    """UsageError if `graph_def` computes in channels_first (NCHW) where there is no GPU:
    TensorFlow's CPU kernels refuse it, at the first image, in a traceback. (export.py writes
    channels_last graphs, whatever layout the run trained in.)"""
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    first = next((node.name for node in nodes if 'data_format' in node.attr and
                  node.attr['data_format'].s in (b'NCHW', b'NCDHW')), None)
    if first and not compat.gpu_available():
        raise UsageError('%s: computes in channels_first (node %s), which TensorFlow runs only '
                         'on a GPU; export.py writes channels_last graphs: export the run again '
                         'with it' % (path, first))


def read_images(paths, image_shape, pixel_max=EIGHT_BIT):
    """PNG/JPEG/GIF/BMP files -> float32 [N, H, W, C] raw pixels in [0, `pixel_max`] (8-bit
    values scaled into it), resized (shorter side, centre crop). GIF and BMP are decoded as RGB
    (TensorFlow cannot decode them to one channel) and made grey for a grey model; a file of
    no such format is refused by its first bytes."""
    height, width, channels = image_shape
    with tf.Graph().as_default():
        contents = tf.placeholder(tf.string)
        decoded = {}
        for decode_channels in sorted({channels, 3}):
            image = tf.image.decode_image(contents, channels=decode_channels,
                                          expand_animations=False)
            if decode_channels == 3 and channels == 1:
                image = tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32)))
            decoded[decode_channels] = tf.image.resize_image_with_crop_or_pad(
                tf.image.resize(image, _shorter_side_to(tf.shape(image), min(height, width))),
                height, width) * (pixel_max / EIGHT_BIT)
        with tf.Session() as sess:
            return np.stack([_decode(sess, contents, decoded, path, channels)
                             for path in paths]).astype(np.float32)


def _decode(sess, contents, decoded, path, channels):
    try:
        data = files.read_bytes(path, 'image')
    except OSError as e:
        raise UsageError('%s: unreadable (%s)' % (path, e.strerror or e))
    kind = next((name for magic, name in FORMATS if data.startswith(magic)), None)
    if kind is None:
        raise UsageError('%s: not a PNG, JPEG, GIF or BMP image (%s)' % (
            path, 'an empty file' if not data else 'it starts with %r' % data[:8]))
    image = decoded[3 if kind in ('GIF', 'BMP') else channels]
    try:
        with _quiet_stderr():  # libjpeg prints its own warning line before failing
            return sess.run(image, {contents: data})
    except tf.errors.OpError as e:
        raise UsageError('%s: not a readable %s image (%s)' % (path, kind, first_line(e)))


@contextlib.contextmanager
def _quiet_stderr():
    """Silences file descriptor 2 (C++ libraries' own logging) for the duration."""
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _shorter_side_to(shape, size):
    hw = tf.cast(shape[:2], tf.float32)
    return tf.cast(tf.round(hw * (size / tf.reduce_min(hw))), tf.int32)
