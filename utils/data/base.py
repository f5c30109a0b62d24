"""What every dataset shares: the `Dataset` base class with its tf.data pipeline, and the checks
that keep malformed labels and pixels from ever reaching training.

Every pipeline yields raw pixel values as float32 NHWC and int32 labels; normalisation by the
dataset's per-channel mean and std happens in the model graph (`Dataset.normalize`), so that an
exported graph takes raw pixels too.
"""
import numpy as np

from models.compat import tf
from utils.errors import DataError


class Dataset(object):
    """What a run needs to know about a dataset, and its input pipeline.

    Subclasses set the class attributes; `image_shape` (height, width, channels) is what the
    model is fed, and `mean`/`std` are per channel, in raw pixel values, which run from 0 to
    `pixel_max` (an exported graph records it: `utils.predict` maps 8-bit images into it).
    """
    name = None
    pixel_max = 255
    image_shape = None
    num_classes = None
    train_size = None
    test_size = None
    mean = None
    std = None

    def normalize(self, images):
        """Raw pixels -> zero mean, unit variance per channel (part of the model graph)."""
        mean = tf.constant(self.mean, images.dtype, name='mean')
        std = tf.constant(self.std, images.dtype, name='std')
        return (images - mean) / std

    def input_fn(self, training, batch_size, num_shards=1, shard_index=0, epochs=None, seed=None):
        """A dataset of (images, labels) batches; training repeats `epochs` times (None: forever)
        and shuffles and augments; evaluation passes once over the whole test split."""
        ds = self._examples(training)
        if num_shards > 1:
            ds = ds.shard(num_shards, shard_index)
        if training:
            ds = ds.shuffle(min(self.train_size, 20000), seed=seed, reshuffle_each_iteration=True)
            ds = ds.repeat(epochs)
        ds = ds.map(lambda image, label: (self._preprocess(image, training), label),
                    num_parallel_calls=2)
        ds = ds.batch(batch_size, drop_remainder=training)
        return ds.prefetch(2)

    def _examples(self, training):
        raise NotImplementedError

    def _preprocess(self, image, training):
        return tf.cast(image, tf.float32)


def from_arrays(images, labels):
    """Single (image, label) examples from in-memory arrays, without embedding them in the graph
    (a constant would bloat every saved GraphDef and checkpoint meta graph)."""
    def generate():
        for i in range(len(labels)):
            yield images[i], labels[i]
    return tf.data.Dataset.from_generator(
        generate, (tf.uint8 if images.dtype == np.uint8 else tf.float32, tf.int32),
        (tf.TensorShape(images.shape[1:]), tf.TensorShape([])))


def shift(image, pixels):
    """`image` moved by up to `pixels` in each direction (zero padding, then a random crop)."""
    padded = tf.pad(image, [[pixels, pixels], [pixels, pixels], [0, 0]])
    return tf.image.random_crop(padded, image.shape.as_list())


def check_labels(labels, num_classes, path):
    """`labels` as int32 if they are a flat list of whole numbers in [0, num_classes); else a
    DataError naming `path` (a float 3.7 is refused, not truncated to 3)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError('%s: labels of shape %s, expected a flat list' % (path, labels.shape))
    if labels.dtype.kind == 'f':
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if np.any(bad):
            raise DataError('%s: label %r is not a class number' % (path, float(labels[bad][0])))
    elif labels.dtype.kind not in 'iub':
        raise DataError('%s: labels of type %s, expected integers' % (path, labels.dtype))
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError('%s: label %d out of range [0, %d)' % (
            path, labels.max() if labels.max() >= num_classes else labels.min(), num_classes))
    return labels.astype(np.int32)


def check_pixels(pixels, path):
    """`pixels` as uint8 if they are whole numbers in [0, 255]; else a DataError naming `path`
    (floats in [0, 1], NaN or 16-bit values would silently become black or wrapped images)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype.kind not in 'iu':
        raise DataError('%s: pixels of type %s, expected uint8 (0-255)' % (path, pixels.dtype))
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise DataError('%s: pixel values %d..%d, expected 0-255' % (
            path, pixels.min(), pixels.max()))
    return pixels.astype(np.uint8)
