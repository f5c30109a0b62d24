"""CIFAR-10 and CIFAR-100 from either official release (binary records or python pickles), the
pickles read with an unpickler that cannot run code."""
import importlib.util
import os
import pickle

import numpy as np

from models.compat import tf
from utils.data.base import Dataset, check_labels, check_pixels, from_arrays, shift
from utils.errors import DataError

# numpy's array reconstructor: numpy._core.multiarray from numpy 2 on, numpy.core before.
_NUMPY_MULTIARRAY = ('numpy._core.multiarray' if importlib.util.find_spec('numpy._core')
                     else 'numpy.core.multiarray')


class _Cifar(Dataset):
    """CIFAR in either official release: the binary files or the python pickles."""
    image_shape = (32, 32, 3)
    train_size = 50000
    test_size = 10000
    IMAGE_BYTES = 32 * 32 * 3

    # (directory, train files, test files, label bytes before the image, label key) per release
    def __init__(self, data_dir):
        data_dir = data_dir or ''
        found = [(kind, os.path.join(data_dir, sub)) for kind, sub in self.RELEASES
                 if os.path.isdir(os.path.join(data_dir, sub))]
        if os.path.basename(os.path.normpath(data_dir)) in dict((s, k) for k, s in self.RELEASES):
            sub = os.path.basename(os.path.normpath(data_dir))
            found = [(dict((s, k) for k, s in self.RELEASES)[sub], data_dir)]
        if not found:
            raise DataError(
                '%s: no %s data; expected %s inside it (get it with: python train.py '
                '--dataset %s --data_dir %s --download True)' % (
                    data_dir or '(no --data_dir)', self.name,
                    ' or '.join(s + '/' for _, s in self.RELEASES), self.name,
                    data_dir or 'DIR'))
        self.kind, self.dir = found[0]
        for split in ('train', 'test'):
            for path in self._files(split == 'train'):
                if not os.path.isfile(path):
                    raise DataError('%s: missing (a complete %s release has %s)' % (
                        path, self.name, ', '.join(os.path.basename(p) for p in
                                                    self._files(True) + self._files(False))))
                size = os.path.getsize(path)
                if self.kind == 'bin' and (size % self._record_bytes() or not size):
                    raise DataError('%s: %s CIFAR binary file (%d bytes is not a positive '
                                    'multiple of the %d-byte record)' % (
                                        path, 'empty' if not size else 'truncated or not a',
                                        size, self._record_bytes()))

    def _record_bytes(self):
        return self.LABEL_BYTES + self.IMAGE_BYTES

    def _files(self, training):
        names = self.FILES[self.kind][0 if training else 1]
        return [os.path.join(self.dir, n) for n in names]

    def _examples(self, training):
        if self.kind == 'bin':
            return self._binary_examples(training)
        images, labels = [], []
        for path in self._files(training):
            batch = load_python_batch(path)
            data = np.asarray(batch.get(b'data', batch.get('data')))
            if data.ndim != 2 or data.shape[1] != self.IMAGE_BYTES or not len(data):
                raise DataError('%s: expected data of shape (N, %d), N > 0, got %s' % (
                    path, self.IMAGE_BYTES, data.shape))
            data = check_pixels(data, path)
            label = batch.get(self.LABEL_KEY.encode(), batch.get(self.LABEL_KEY))
            if label is None or len(label) != len(data):
                raise DataError('%s: no %r list matching the %d images' % (
                    path, self.LABEL_KEY, len(data)))
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(check_labels(label, self.num_classes, path))
        return from_arrays(np.concatenate(images), np.concatenate(labels))

    def _binary_examples(self, training):
        files = self._files(training)
        for path in files:  # the label bytes only: cheap, and a bad label fails here, not mid-run
            try:
                raw = np.fromfile(path, np.uint8).reshape(-1, self._record_bytes())
            except OSError as e:
                raise DataError('%s: unreadable (%s)' % (path, e.strerror or e))
            check_labels(raw[:, self.LABEL_BYTES - 1], self.num_classes, path)
        label_offset = self.LABEL_BYTES - 1

        def parse(record):
            raw = tf.io.decode_raw(record, tf.uint8)
            label = tf.cast(raw[label_offset], tf.int32)
            image = tf.reshape(raw[self.LABEL_BYTES:], [3, 32, 32])
            return tf.transpose(image, [1, 2, 0]), label
        return tf.data.FixedLengthRecordDataset(files, self._record_bytes()).map(parse)

    def _preprocess(self, image, training):
        image = tf.cast(image, tf.float32)
        if training:
            image = shift(image, 4)
            image = tf.image.random_flip_left_right(image)
        return image


class Cifar10(_Cifar):
    name = 'cifar10'
    num_classes = 10
    mean = [125.3, 123.0, 113.9]
    std = [63.0, 62.1, 66.7]
    LABEL_BYTES = 1
    LABEL_KEY = 'labels'
    RELEASES = (('bin', 'cifar-10-batches-bin'), ('py', 'cifar-10-batches-py'))
    FILES = {'bin': (['data_batch_%d.bin' % i for i in range(1, 6)], ['test_batch.bin']),
             'py': (['data_batch_%d' % i for i in range(1, 6)], ['test_batch'])}


class Cifar100(_Cifar):
    name = 'cifar100'
    num_classes = 100
    mean = [129.3, 124.1, 112.4]
    std = [68.2, 65.4, 70.4]
    LABEL_BYTES = 2  # coarse label, then the fine label we train on
    LABEL_KEY = 'fine_labels'
    RELEASES = (('bin', 'cifar-100-binary'), ('py', 'cifar-100-python'))
    FILES = {'bin': (['train.bin'], ['test.bin']), 'py': (['train'], ['test'])}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR's python batches hold: dicts, lists, strings, numbers and numpy
    arrays. Any other global is refused before it is looked up, so nothing else can run.

    Modules are named as the writer's Python and numpy named them, and looked up in this one's:
    Python 2's copy_reg and __builtin__, numpy 1's numpy.core and numpy 2's numpy._core."""
    ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy', 'ndarray'), ('numpy', 'dtype'),
        ('numpy.core.multiarray', 'scalar'), ('copy_reg', '_reconstructor'),
        ('copyreg', '_reconstructor'), ('__builtin__', 'object'), ('builtins', 'object'),
        ('numpy._core.multiarray', '_reconstruct'), ('numpy._core.multiarray', 'scalar'),
        # Python 3 writes bytes as _codecs.encode(text, 'latin1') under pickle protocol 2, and
        # empty bytes as bytes().
        ('_codecs', 'encode'), ('__builtin__', 'bytes'), ('builtins', 'bytes'),
    }
    MODULES = {'copy_reg': 'copyreg', '__builtin__': 'builtins',
               'numpy.core.multiarray': _NUMPY_MULTIARRAY,
               'numpy._core.multiarray': _NUMPY_MULTIARRAY}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError('refusing to load %s.%s' % (module, name))
        return super(_RestrictedUnpickler, self).find_class(self.MODULES.get(module, module), name)


def load_python_batch(path):
    """A CIFAR python-release batch as a dict, read with the restricted unpickler."""
    try:
        with open(path, 'rb') as f:
            batch = _RestrictedUnpickler(f, encoding='bytes').load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError('%s: not a CIFAR python batch (%s)' % (path, e))
    except OSError as e:
        raise DataError('%s: unreadable (%s)' % (path, e.strerror or e))
    if not isinstance(batch, dict):
        raise DataError('%s: not a CIFAR python batch (a %s, not a dict)' % (
            path, type(batch).__name__))
    return batch
