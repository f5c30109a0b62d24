"""Datasets and their tf.data input pipelines: digits (bundled), MNIST, Fashion-MNIST, CIFAR-10/100,
ImageNet TFRecords and synthetic data; one module per source, this registry in front of them.

Every pipeline yields raw pixels as float32 NHWC and int32 labels, normalised inside the model
graph (`Dataset.normalize`). A dataset's files are read and checked when it is made, so bad data
stops a run before it writes anything (`utils.errors.DataError`, naming the file).
"""
import os

from utils.data.base import Dataset
from utils.data.cifar import Cifar10, Cifar100, load_python_batch
from utils.data.digits import Digits
from utils.data.idx import FashionMnist, Mnist
from utils.data.imagenet import ImageNet
from utils.data.synthetic import DatasetSpec, Synthetic
from utils.errors import DataError

DATASETS = ('digits', 'mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'imagenet', 'synthetic')
SYNTHETIC_LIKE = ('mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'imagenet')
DOWNLOADABLE = ('mnist', 'fashion_mnist', 'cifar10', 'cifar100')  # by train.py --download
CLASSES = {'digits': Digits, 'mnist': Mnist, 'fashion_mnist': FashionMnist, 'cifar10': Cifar10,
           'cifar100': Cifar100, 'imagenet': ImageNet}

__all__ = ['CLASSES', 'DATASETS', 'DOWNLOADABLE', 'SYNTHETIC_LIKE', 'DataError', 'Dataset',
           'DatasetSpec', 'default_data_dir', 'for_model', 'get_dataset', 'load_python_batch',
           'spec']


def default_data_dir(name, download=False):
    """Where dataset `name`'s files are read from when no --data_dir is given: where a system
    package installed them (Debian's Fashion-MNIST), else, to download into, data/ for CIFAR
    (whose archives unpack into a directory of their own) and data/NAME for MNIST and
    Fashion-MNIST (whose files have the same names); else None."""
    system_dir = getattr(CLASSES.get(name), 'SYSTEM_DIR', None)
    if system_dir and os.path.isdir(system_dir):
        return system_dir
    if download and name in DOWNLOADABLE:
        return 'data' if name.startswith('cifar') else os.path.join('data', name)
    return None


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
    """The `Dataset` called `name`, its files in `data_dir` (`default_data_dir` says where the
    commands look); DataError if they are missing or malformed."""
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
