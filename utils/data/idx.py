"""MNIST and Fashion-MNIST from the IDX files they ship in (gzipped or not), with every check a
damaged or foreign file fails: magic number, shape, length, and images matching labels.

An IDX file is a big-endian header (two zero bytes, a type byte, the number of dimensions, then
one uint32 per dimension) followed by the values; both datasets use unsigned bytes (type 0x08):
images are (N, rows, cols), labels (N,).
"""
import functools
import gzip
import operator
import os
import stat
import struct
import zlib

import numpy as np

from models.compat import tf
from utils.data.base import Dataset, check_labels, from_arrays, shift
from utils.errors import DataError

UBYTE = 0x08


MAX_BYTES = 2 ** 30  # the most values an IDX file here may hold (MNIST's largest: 47 MB)


def find(directory, name):
    """`directory/name.gz` or `directory/name`, whichever exists (the .gz first), else None.
    Anything by that name counts: `read` says what is wrong with a directory or FIFO."""
    for candidate in (name + '.gz', name):
        path = os.path.join(directory, candidate)
        if os.path.lexists(path):
            return path
    return None


def read(path, dims, header_only=False):
    """The uint8 array of IDX file `path`, which must have `dims` dimensions; DataError naming the
    file for anything else (not a regular file, wrong magic number or type, truncated, trailing
    bytes, bad gzip). The header is checked before the values are read, and no more bytes are
    decompressed than it announces (plus one): a gzip bomb is refused, not inflated. With
    `header_only`, the shape its header announces, nothing more read."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError('%s: not a regular file' % path)
        with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
            shape, size = _header(path, f.read(4 + 4 * dims), dims)
            if header_only:
                return shape
            raw = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError('%s: unreadable (%s)' % (path, getattr(e, 'strerror', None) or e))
    if len(raw) != size:
        raise DataError('%s: %s IDX file (%s bytes; its header %s needs %d)' % (
            path, 'truncated' if len(raw) < size else 'overlong',
            len(raw) + 4 + 4 * dims if len(raw) <= size else 'more than %d' % (4 + 4 * dims + size),
            'x'.join(map(str, shape)), 4 + 4 * dims + size))
    return np.frombuffer(raw, np.uint8).reshape(shape)


def _header(path, header, dims):
    """(shape, number of value bytes) from an IDX header, checked: magic number, type,
    dimensions, and a size below MAX_BYTES (Python integers: no product wraps around)."""
    if len(header) < 4 + 4 * dims:
        raise DataError('%s: truncated IDX file (%d bytes, the header alone is %d)' % (
            path, len(header), 4 + 4 * dims))
    zeros, kind, ndim = struct.unpack('>HBB', header[:4])
    if zeros != 0 or kind != UBYTE or ndim != dims:
        raise DataError('%s: not an IDX file of %d-dimensional unsigned bytes (magic number '
                        '0x%08x, expected 0x%08x)' % (path, dims, struct.unpack(
                            '>I', header[:4])[0], UBYTE << 8 | dims))
    shape = struct.unpack('>%dI' % dims, header[4:])
    size = functools.reduce(operator.mul, shape, 1)
    if size > MAX_BYTES:
        raise DataError('%s: its IDX header announces %s values (%d bytes), more than the %d '
                        'an IDX file may hold here' % (path, 'x'.join(map(str, shape)), size,
                                                       MAX_BYTES))
    return shape, size


def read_split(directory, images_name, labels_name, image_size):
    """(images (N, size, size, 1) uint8, labels (N,) uint8, the labels' path) of one split,
    checked for shape and matching, non-zero counts (the caller checks the label values)."""
    paths = []
    for name in (images_name, labels_name):
        path = find(directory, name)
        if path is None:
            raise DataError('%s: missing (expected %s.gz or %s)' % (
                os.path.join(directory, name), name, name))
        paths.append(path)
    # The counts the headers announce are compared first: a mismatch costs no inflating.
    counts = [read(path, dims, header_only=True)[0] for path, dims in zip(paths, (3, 1))]
    if counts[0] != counts[1]:
        raise DataError('%s holds %d labels but %s holds %d images' % (
            paths[1], counts[1], paths[0], counts[0]))
    images, labels = read(paths[0], 3), read(paths[1], 1)
    if images.shape[1:] != (image_size, image_size):
        raise DataError('%s: images of %dx%d pixels, expected %dx%d' % (
            paths[0], images.shape[1], images.shape[2], image_size, image_size))
    if len(images) != len(labels):
        raise DataError('%s holds %d labels but %s holds %d images' % (
            paths[1], len(labels), paths[0], len(images)))
    if len(labels) == 0:
        raise DataError('%s: no images' % paths[0])
    return images[..., None], labels, paths[1]


class IdxDataset(Dataset):
    """A 28x28 grey, 10-class dataset in the four original IDX files (gzipped or not), read
    and checked whole when the dataset is made, so a bad file stops a run before it writes."""
    image_shape = (28, 28, 1)
    num_classes = 10
    train_size = 60000
    test_size = 10000
    FILES = {True: ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
             False: ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
    SYSTEM_DIR = None  # where a system package installs the files, if one does
    FLIP = False

    def __init__(self, data_dir):
        if not data_dir or not os.path.isdir(data_dir):
            hint = (' or, on Debian/Ubuntu, apt-get install dataset-fashion-mnist'
                    if self.SYSTEM_DIR else '')
            raise DataError('%s: no %s data directory (get the files with: python train.py '
                            '--dataset %s --data_dir DIR --download True%s)' % (
                                data_dir or '(no --data_dir)', self.name, self.name, hint))
        self.dir = data_dir
        self._splits = {}
        for training, names in self.FILES.items():
            images, labels, labels_path = read_split(data_dir, *names, self.image_shape[0])
            self._splits[training] = (images, check_labels(labels, self.num_classes,
                                                           labels_path))
        self.train_size = len(self._splits[True][1])
        self.test_size = len(self._splits[False][1])

    def _examples(self, training):
        return from_arrays(*self._splits[training])

    def _preprocess(self, image, training):
        image = tf.cast(image, tf.float32)
        if training:  # shift by up to two pixels; mirror only where that keeps the class
            image = shift(image, 2)
            if self.FLIP:
                image = tf.image.random_flip_left_right(image)
        return image


class Mnist(IdxDataset):
    """LeCun et al.'s handwritten digits: 60,000 training and 10,000 test images."""
    name = 'mnist'
    mean = [33.32]   # 0.1307 and 0.3081 of 255: the training images' statistics
    std = [78.57]


class FashionMnist(IdxDataset):
    """Zalando's Fashion-MNIST (MIT licence): 10 kinds of clothing, MNIST's size and format.
    Debian's dataset-fashion-mnist package installs it in SYSTEM_DIR."""
    name = 'fashion_mnist'
    mean = [72.94]   # 0.2860 and 0.3530 of 255: the training images' statistics
    std = [90.02]
    SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'
    FLIP = True   # clothes are left-right symmetric; digits are not
