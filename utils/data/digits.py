"""scikit-learn's bundled handwritten digits: the dataset every command works on out of the box."""
import numpy as np

from models.compat import tf
from utils.data.base import Dataset, from_arrays, shift


class Digits(Dataset):
    """1,797 real 8x8 images (values 0-16), 10 classes, bundled with scikit-learn.

    Fixed split: a seeded stratified permutation keeps 360 images for test.
    """
    name = 'digits'
    pixel_max = 16
    image_shape = (8, 8, 1)
    num_classes = 10
    TEST_SIZE = 360

    def __init__(self, data_dir=None):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        digits = load_digits()
        images = digits.images.astype(np.float32)[..., None]
        split = train_test_split(images, digits.target.astype(np.int32), test_size=self.TEST_SIZE,
                                 random_state=0, stratify=digits.target)
        self.train_images, self.test_images, self.train_labels, self.test_labels = split
        self.train_size, self.test_size = len(self.train_labels), len(self.test_labels)
        self.mean = [float(self.train_images.mean())]
        self.std = [float(self.train_images.std())]

    def _examples(self, training):
        if training:
            return from_arrays(self.train_images, self.train_labels)
        return from_arrays(self.test_images, self.test_labels)

    def _preprocess(self, image, training):
        image = tf.cast(image, tf.float32)
        if training:  # shift by up to one pixel
            image = shift(image, 1)
        return image
