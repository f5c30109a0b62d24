"""Input pipelines (tf.data) for digits, MNIST, Fashion-MNIST, CIFAR-10/100, ImageNet TFRecords
and synthetic data.

Every pipeline yields raw pixel values as float32 NHWC and int32 labels; normalisation by the
dataset's per-channel mean and std happens in the model graph (`Dataset.normalize`), so that an
exported graph takes raw pixels too.
"""
import dataclasses
import glob
import os
import pickle

import numpy as np

from models.compat import tf
from models.keras_import import PIXEL_MEAN, PIXEL_STD
from utils import idx
from utils.errors import DataError

DATASETS = ('digits', 'mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'imagenet', 'synthetic')
SYNTHETIC_LIKE = ('mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'imagenet')
DOWNLOADABLE = ('mnist', 'fashion_mnist', 'cifar10', 'cifar100')  # by train.py --download


@dataclasses.dataclass(frozen=True)
class Defaults(object):
    """What train.py uses for a dataset where the flags say nothing."""
    model: str
    depth: int
    growth_rate: int
    batch_size: int
    train_epochs: float
    epochs_per_eval: float


class Dataset(object):
    """What a run needs to know about a dataset, and its input pipeline.

    Subclasses set the class attributes; `image_shape` (height, width, channels) is what the
    model is fed, and `mean`/`std` are per channel, in raw pixel values.
    """
    name = None
    image_shape = None
    num_classes = None
    train_size = None
    test_size = None
    mean = None
    std = None
    defaults = None

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


def _from_arrays(images, labels):
    """Single (image, label) examples from in-memory arrays, without embedding them in the graph
    (a constant would bloat every saved GraphDef and checkpoint meta graph)."""
    def generate():
        for i in range(len(labels)):
            yield images[i], labels[i]
    return tf.data.Dataset.from_generator(
        generate, (tf.uint8 if images.dtype == np.uint8 else tf.float32, tf.int32),
        (tf.TensorShape(images.shape[1:]), tf.TensorShape([])))


def _shift(image, pixels):
    """`image` moved by up to `pixels` in each direction (zero padding, then a random crop)."""
    padded = tf.pad(image, [[pixels, pixels], [pixels, pixels], [0, 0]])
    return tf.image.random_crop(padded, image.shape.as_list())


def _check_labels(labels, num_classes, path):
    """`labels` as int32 if they are a flat list of whole numbers in [0, num_classes); else a
    DataError naming `path` (a float 3.7 is refused, not truncated to 3)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError('%s: labels of shape %s, expected a flat list' % (path, labels.shape))
    if labels.dtype.kind == 'f':
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if np.any(bad):
            raise DataError('%s: label %r is not a class number' % (path, labels[bad][0]))
    elif labels.dtype.kind not in 'iub':
        raise DataError('%s: labels of type %s, expected integers' % (path, labels.dtype))
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError('%s: label %d out of range [0, %d)' % (
            path, labels.max() if labels.max() >= num_classes else labels.min(), num_classes))
    return labels.astype(np.int32)


def _check_pixels(pixels, path):
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


class Digits(Dataset):
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 images (values 0-16), 10 classes.

    Fixed split: a seeded stratified permutation keeps 360 images for test.
    """
    name = 'digits'
    image_shape = (8, 8, 1)
    num_classes = 10
    defaults = Defaults('densenet_bc', 40, 12, 64, 30, 10)
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
            return _from_arrays(self.train_images, self.train_labels)
        return _from_arrays(self.test_images, self.test_labels)

    def _preprocess(self, image, training):
        image = tf.cast(image, tf.float32)
        if training:  # shift by up to one pixel
            image = _shift(image, 1)
        return image


class _Idx(Dataset):
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
        data_dir = data_dir or default_data_dir(self.name)
        if not data_dir or not os.path.isdir(data_dir):
            hint = (' or, on Debian/Ubuntu, apt-get install dataset-fashion-mnist'
                    if self.SYSTEM_DIR else '')
            raise DataError('%s: no %s data directory (get the files with: python train.py '
                            '--dataset %s --data_dir DIR --download True%s)' % (
                                data_dir or '(no --data_dir)', self.name, self.name, hint))
        self.dir = data_dir
        self._splits = {}
        for training, names in self.FILES.items():
            images, labels, labels_path = idx.read_split(data_dir, *names, self.image_shape[0])
            self._splits[training] = (images, _check_labels(labels, self.num_classes,
                                                            labels_path))
        self.train_size = len(self._splits[True][1])
        self.test_size = len(self._splits[False][1])

    def _examples(self, training):
        return _from_arrays(*self._splits[training])

    def _preprocess(self, image, training):
        image = tf.cast(image, tf.float32)
        if training:  # shift by up to two pixels; mirror only where that keeps the class
            image = _shift(image, 2)
            if self.FLIP:
                image = tf.image.random_flip_left_right(image)
        return image


class Mnist(_Idx):
    """LeCun et al.'s handwritten digits: 60,000 training and 10,000 test images."""
    name = 'mnist'
    mean = [33.32]   # 0.1307 and 0.3081 of 255: the training images' statistics
    std = [78.57]
    defaults = Defaults('densenet_bc', 40, 12, 64, 15, 5)


class FashionMnist(_Idx):
    """Zalando's Fashion-MNIST (MIT licence): 10 kinds of clothing, MNIST's size and format.
    Debian's dataset-fashion-mnist package installs it in SYSTEM_DIR, the default --data_dir."""
    name = 'fashion_mnist'
    mean = [72.94]   # 0.2860 and 0.3530 of 255: the training images' statistics
    std = [90.02]
    defaults = Defaults('densenet_bc', 40, 12, 64, 15, 5)
    SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'
    FLIP = True   # clothes are left-right symmetric; digits are not


def default_data_dir(name):
    """The directory a system package installed dataset `name` in, if it exists, else None."""
    system_dir = getattr(CLASSES[name], 'SYSTEM_DIR', None)
    return system_dir if system_dir and os.path.isdir(system_dir) else None


class _Cifar(Dataset):
    image_shape = (32, 32, 3)
    train_size = 50000
    test_size = 10000
    defaults = Defaults('densenet_bc', 100, 12, 64, 300, 10)
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
            data = _check_pixels(data, path)
            label = batch.get(self.LABEL_KEY.encode(), batch.get(self.LABEL_KEY))
            if label is None or len(label) != len(data):
                raise DataError('%s: no %r list matching the %d images' % (
                    path, self.LABEL_KEY, len(data)))
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(_check_labels(label, self.num_classes, path))
        return _from_arrays(np.concatenate(images), np.concatenate(labels))

    def _binary_examples(self, training):
        files = self._files(training)
        for path in files:  # the label bytes only: cheap, and a bad label fails here, not mid-run
            try:
                raw = np.fromfile(path, np.uint8).reshape(-1, self._record_bytes())
            except OSError as e:
                raise DataError('%s: unreadable (%s)' % (path, e.strerror or e))
            _check_labels(raw[:, self.LABEL_BYTES - 1], self.num_classes, path)
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
            image = _shift(image, 4)
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
    arrays. Any other global is refused before it is looked up, so nothing else can run."""
    ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy', 'ndarray'), ('numpy', 'dtype'),
        ('numpy.core.multiarray', 'scalar'), ('copy_reg', '_reconstructor'),
        ('copyreg', '_reconstructor'), ('__builtin__', 'object'), ('builtins', 'object'),
        # Python 3 writes bytes as _codecs.encode(text, 'latin1') under pickle protocol 2, and
        # empty bytes as bytes().
        ('_codecs', 'encode'), ('__builtin__', 'bytes'), ('builtins', 'bytes'),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError('refusing to load %s.%s' % (module, name))
        if module == 'copy_reg':
            module = 'copyreg'
        elif module == '__builtin__':
            module = 'builtins'
        return super(_RestrictedUnpickler, self).find_class(module, name)


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


def _check_first_record(path, keys, num_classes):
    """DataError unless `path`'s first record is intact (CRCs) and a tf.train.Example with `keys`
    and a 1-based label up to `num_classes`: a wrong or damaged file is named before training (a
    later corrupt record stops the run)."""
    try:
        record = next(iter(tf.io.tf_record_iterator(path)), None)
        example = tf.train.Example.FromString(record) if record is not None else None
    except (tf.errors.OpError, ValueError) as e:  # DecodeError is a ValueError
        message = getattr(e, 'message', None) or str(e)
        raise DataError('%s: not a readable TFRecord file of tf.train.Examples (%s)' % (
            path, message.splitlines()[0]))
    if example is None:
        raise DataError('%s: empty TFRecord file' % path)
    missing = [k for k in keys if k not in example.features.feature]
    if missing:
        raise DataError('%s: records lack %s' % (path, ', '.join(missing)))
    label = list(example.features.feature['image/class/label'].int64_list.value)
    if len(label) != 1 or not 1 <= label[0] <= num_classes:
        raise DataError('%s: first record\'s image/class/label is %s, expected one of 1..%d' % (
            path, label[0] if len(label) == 1 else label, num_classes))


class ImageNet(Dataset):
    """TFRecord shards in the standard layout: train-* and validation-*, with image/encoded (JPEG
    or PNG) and image/class/label (1-based; 0 is the background class in some exports)."""
    name = 'imagenet'
    image_shape = (224, 224, 3)  # the default; --image_size sets another
    num_classes = 1000
    train_size = 1281167
    test_size = 50000
    defaults = Defaults('densenet121', 121, 32, 256, 90, 1)
    mean = list(PIXEL_MEAN)   # tf.keras' "torch" mode, so imported Keras weights see their inputs
    std = list(PIXEL_STD)

    def __init__(self, data_dir, image_size=224):
        self.dir = data_dir or ''
        self.image_shape = (image_size, image_size, 3)
        self._shards = {}  # training (bool) -> sorted shard paths
        for training, prefix in ((True, 'train'), (False, 'validation')):
            shards = sorted(glob.glob(os.path.join(self.dir, prefix + '-*')))
            if not shards:
                raise DataError('%s: no %s-* TFRecord shards (expected the standard ImageNet '
                                'layout: train-00000-of-01024 ..., validation-00000-of-00128 ...)'
                                % (self.dir or '(no --data_dir)', prefix))
            for shard in shards:
                _check_first_record(shard, ('image/encoded', 'image/class/label'),
                                    self.num_classes)
            self._shards[training] = shards

    def _examples(self, training):
        files = self._shards[training]
        ds = tf.data.Dataset.from_tensor_slices(files)
        if training:
            ds = ds.shuffle(len(files))
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)))
        features = {'image/encoded': tf.io.FixedLenFeature([], tf.string),
                    'image/class/label': tf.io.FixedLenFeature([], tf.int64)}

        def parse(record):
            parsed = tf.io.parse_single_example(record, features)
            return parsed['image/encoded'], tf.cast(parsed['image/class/label'] - 1, tf.int32)
        return ds.map(parse)

    def _preprocess(self, encoded, training):
        size = self.image_shape[0]
        image = tf.image.decode_image(encoded, channels=3, expand_animations=False)
        if training:
            begin, crop, _ = tf.image.sample_distorted_bounding_box(
                tf.shape(image), tf.zeros([0, 0, 4]), min_object_covered=0.1,
                aspect_ratio_range=(3. / 4, 4. / 3), area_range=(0.08, 1.0),
                max_attempts=10, use_image_if_no_bounding_boxes=True)
            image = tf.slice(image, begin, crop)
            image = tf.image.resize(image, [size, size])
            image = tf.image.random_flip_left_right(image)
        else:
            # Resize the shorter side to size / 0.875, then take the central size x size crop.
            shape = tf.cast(tf.shape(image)[:2], tf.float32)
            scale = (size / 0.875) / tf.reduce_min(shape)
            new = tf.cast(tf.round(shape * scale), tf.int32)
            image = tf.image.resize(image, new)
            top, left = (new[0] - size) // 2, (new[1] - size) // 2
            image = image[top:top + size, left:left + size]
        image.set_shape([size, size, 3])
        return tf.cast(image, tf.float32)


class Synthetic(Dataset):
    """Random images in [0, 255] with random labels, of another dataset's shape (no I/O)."""
    name = 'synthetic'

    def __init__(self, like):
        self.image_shape, self.num_classes = like.image_shape, like.num_classes
        self.train_size, self.test_size = like.train_size, like.test_size
        self.mean, self.std = like.mean, like.std
        self.defaults = synthetic_defaults(like.defaults)

    def _examples(self, training):
        shape, classes = self.image_shape, self.num_classes
        ds = tf.data.Dataset.range(self.train_size if training else self.test_size)
        return ds.map(lambda i: (tf.random.uniform(shape, 0, 255),
                                 tf.random.uniform([], 0, classes, tf.int32)))


class DatasetSpec(Dataset):
    """Shape, classes and normalisation of a dataset, without its files (e.g. for export)."""

    def __init__(self, like, image_shape):
        self.name, self.image_shape = like.name, tuple(image_shape)
        self.num_classes = like.num_classes
        self.train_size, self.test_size = like.train_size, like.test_size
        self.mean, self.std, self.defaults = like.mean, like.std, like.defaults


CLASSES = {'digits': Digits, 'mnist': Mnist, 'fashion_mnist': FashionMnist, 'cifar10': Cifar10,
           'cifar100': Cifar100, 'imagenet': ImageNet}


def synthetic_defaults(like):
    """A synthetic run is a smoke test: one epoch, evaluated at its end."""
    return dataclasses.replace(like, train_epochs=1, epochs_per_eval=1)


def defaults(name, synthetic=False):
    """The `Defaults` of dataset `name` (not synthetic), or of synthetic data shaped like it."""
    like = CLASSES[name].defaults
    return synthetic_defaults(like) if synthetic else like


def spec(name, image_size=None):
    """The `DatasetSpec` of a dataset (not synthetic); reads no data directory."""
    if name == 'digits':
        return Digits()  # bundled with scikit-learn
    if name in CLASSES:
        height, _, channels = CLASSES[name].image_shape
        size = image_size or height
        return DatasetSpec(CLASSES[name], (size, size, channels))
    raise ValueError('unknown dataset %r; choose one of %s' % (name, ', '.join(DATASETS)))


def get_dataset(name, data_dir=None, image_size=None, synthetic_like='cifar10'):
    """The `Dataset` called `name`; raises DataError if its files are missing or malformed."""
    if name == 'digits':
        return Digits(data_dir)
    if name in ('mnist', 'fashion_mnist', 'cifar10', 'cifar100'):
        return CLASSES[name](data_dir)
    if name == 'imagenet':
        return ImageNet(data_dir, image_size or ImageNet.image_shape[0])
    if name == 'synthetic':
        if synthetic_like not in SYNTHETIC_LIKE:
            raise ValueError('synthetic data mimics %s, not %r' % (
                ', '.join(SYNTHETIC_LIKE), synthetic_like))
        return Synthetic(spec(synthetic_like, image_size))
    raise ValueError('unknown dataset %r; choose one of %s' % (name, ', '.join(DATASETS)))


def for_model(config, data_dir=None):
    """The dataset a `utils.config.ModelConfig` names (its synthetic stand-in if it says so)."""
    return get_dataset(config.data_name, data_dir, config.image_size, config.dataset)
