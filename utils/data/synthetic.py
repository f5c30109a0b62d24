"""Datasets without files: random images of another dataset's shape (smoke tests, benchmarks),
and the shape, classes and normalisation of a dataset alone (export, the Estimator)."""
from models.compat import tf
from utils.data.base import Dataset


class Synthetic(Dataset):
    """Random images in [0, 255] with random labels, of another dataset's shape (no I/O)."""
    name = 'synthetic'

    def __init__(self, like):
        self.image_shape, self.num_classes = like.image_shape, like.num_classes
        self.train_size, self.test_size = like.train_size, like.test_size
        self.mean, self.std = like.mean, like.std

    def _examples(self, training):
        shape, classes = self.image_shape, self.num_classes
        ds = tf.data.Dataset.range(self.train_size if training else self.test_size)
        return ds.map(lambda i: (tf.random.uniform(shape, 0, 255),
                                 tf.random.uniform([], 0, classes, tf.int32)))


class DatasetSpec(Dataset):
    """Shape, classes and normalisation of a dataset, without its files (e.g. for export)."""

    def __init__(self, like, image_shape):
        self.name, self.image_shape = like.name, tuple(image_shape)
        self.num_classes, self.pixel_max = like.num_classes, like.pixel_max
        self.train_size, self.test_size = like.train_size, like.test_size
        self.mean, self.std = like.mean, like.std
