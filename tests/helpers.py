"""What several test modules share: data files the tests write (CIFAR, IDX, ImageNet TFRecords),
a run of an input pipeline, the real commands as processes, and the checks of a refused input."""
import gzip
import hashlib
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import time

import numpy as np

from conftest import PYTHON, ROOT, SMALL
from models.compat import tf

IDX_NAMES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
             't10k-labels-idx1-ubyte')
# How long a test waits for a process that should end promptly: a guard against a hang, far
# beyond what a slow or busy machine needs (no test depends on the machine being idle).
HANG_GUARD = 600
# Slow enough per step (~40 steps/s here) that a poll sees the checkpoints go by.
LONG = SMALL + ['--max_steps', '600', '--save_checkpoint_steps', '20', '--epochs_per_eval', '0']


# -- data files --------------------------------------------------------------------------------

def take(dataset, training, batch_size=4, batches=None):
    """Runs the input pipeline; returns (images, labels) of all (or `batches`) batches."""
    with tf.Graph().as_default():
        ds = dataset.input_fn(training, batch_size, epochs=1 if training else None, seed=1)
        nxt = tf.data.make_one_shot_iterator(ds).get_next()
        images, labels = [], []
        with tf.Session() as sess:
            while batches is None or len(labels) < batches:
                try:
                    x, y = sess.run(nxt)
                except tf.errors.OutOfRangeError:
                    break
                images.append(x)
                labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def cifar_images(n, seed):
    return np.random.RandomState(seed).randint(0, 256, size=(n, 3, 32, 32)).astype(np.uint8)


def write_cifar_bin(path, images, labels, coarse=None):
    with open(path, 'wb') as f:
        for i, (image, label) in enumerate(zip(images, labels)):
            if coarse is not None:
                f.write(bytes([coarse[i]]))
            f.write(bytes([label]))
            f.write(image.tobytes())


def make_cifar10_bin(root, per_file=3):
    """A CIFAR-10 binary release of `per_file` images per file; returns (its directory, the
    first test image and label)."""
    d = os.path.join(root, 'cifar-10-batches-bin')
    os.makedirs(d)
    first = None
    for i, name in enumerate(['data_batch_%d.bin' % j for j in range(1, 6)] + ['test_batch.bin']):
        images = cifar_images(per_file, i)
        labels = [(i + j) % 10 for j in range(per_file)]
        write_cifar_bin(os.path.join(d, name), images, labels)
        if name == 'test_batch.bin':
            first = (images[0], labels[0])
    return d, first


def make_cifar_py(root, hundred=False, per_file=3):
    """A CIFAR-10 (or -100) python release, pickled as the official one; returns its directory."""
    d = os.path.join(root, 'cifar-100-python' if hundred else 'cifar-10-batches-py')
    os.makedirs(d)
    names = ['train', 'test'] if hundred else ['data_batch_%d' % j for j in range(1, 6)] + [
        'test_batch']
    for i, name in enumerate(names):
        images = cifar_images(per_file, i).reshape(per_file, -1)
        labels = [(i * 7 + j) % (100 if hundred else 10) for j in range(per_file)]
        batch = {b'data': images, b'batch_label': b'fake batch %d' % i,
                 b'filenames': [b'img%d.png' % j for j in range(per_file)]}
        batch[b'fine_labels' if hundred else b'labels'] = labels
        if hundred:
            batch[b'coarse_labels'] = [l // 5 for l in labels]
        with open(os.path.join(d, name), 'wb') as f:
            pickle.dump(batch, f, protocol=2)
    return d


def python_batch(path, pixels, labels):
    with open(path, 'wb') as f:
        pickle.dump({b'data': pixels, b'labels': labels}, f, protocol=2)


class Payload(object):
    """Pickled, it runs `touch marker` when loaded by a standard unpickler."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ('touch %s' % self.marker,))


def write_idx(path, array):
    """Writes uint8 `array` as an IDX file; gzipped if `path` ends in .gz."""
    array = np.asarray(array, np.uint8)
    blob = struct.pack('>HBB', 0, 0x08, array.ndim) + struct.pack(
        '>%dI' % array.ndim, *array.shape) + array.tobytes()
    with (gzip.open if path.endswith('.gz') else open)(path, 'wb') as f:
        f.write(blob)
    return path


def make_idx_dataset(directory, train=40, test=20, gz=True, seed=0):
    """Four IDX files whose images are the class number written into a corner, and the arrays."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.RandomState(seed)
    arrays = {}
    for prefix, n in (('train', train), ('t10k', test)):
        labels = np.arange(n) % 10
        images = rng.randint(0, 60, size=(n, 28, 28)).astype(np.uint8)
        images[np.arange(n), 10 + labels, 10 + labels] = 255
        arrays[prefix] = (images, labels)
        suffix = '.gz' if gz else ''
        write_idx(os.path.join(directory, prefix + '-images-idx3-ubyte' + suffix), images)
        write_idx(os.path.join(directory, prefix + '-labels-idx1-ubyte' + suffix), labels)
    return arrays


def serve_idx(root):
    """The four IDX files gzipped under root/official/ and their MD5s."""
    official = os.path.join(root, 'official')
    make_idx_dataset(official)
    md5s = {}
    for name in IDX_NAMES:
        with open(os.path.join(official, name + '.gz'), 'rb') as f:
            md5s[name + '.gz'] = hashlib.md5(f.read()).hexdigest()
    return md5s


def _png(height, width, seed):
    image = np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)
    with tf.Graph().as_default(), tf.Session() as sess:
        return sess.run(tf.image.encode_png(image))


def make_imagenet(root, n=3, first_label=1):
    """train-00000-of-00001 and validation-00000-of-00001 of `n` PNG examples each."""
    for prefix in ('train', 'validation'):
        path = os.path.join(root, '%s-00000-of-00001' % prefix)
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(n):
                example = tf.train.Example(features=tf.train.Features(feature={
                    'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[_png(30 + i, 40, i)])),
                    'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[i + first_label])),
                }))
                writer.write(example.SerializeToString())


# -- processes and run directories ---------------------------------------------------------------

def start(*args, horovod=False):
    """train.py with `args` as a process of its own (its own session, for signals)."""
    command = [PYTHON, os.path.join(ROOT, 'train.py')] + list(args)
    if horovod:
        command = [horovodrun(), '-np', '2', '-H', 'localhost:2', '--gloo'] + command
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, start_new_session=True)


def interruptible():
    """preexec_fn: SIGINT as a terminal delivers it. A shell that runs the suite in the
    background (`make test &`) starts it with SIGINT ignored, children inherit that, and Python
    then keeps ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def horovodrun():
    found = os.path.join(os.path.dirname(PYTHON), 'horovodrun')
    found = found if os.path.exists(found) else shutil.which('horovodrun')
    assert found, 'horovodrun is not installed (make venv builds it)'
    return found


def latest_step(model_dir):
    latest = tf.train.latest_checkpoint(model_dir) if os.path.isdir(model_dir) else None
    return int(latest.rsplit('-', 1)[1]) if latest else -1


def wait_for_checkpoint(proc, model_dir, step):
    """Waits while `proc` runs until `model_dir` has a checkpoint at `step` or later; fails if
    the process ends first. (No time limit: the process's end bounds the wait.)"""
    while latest_step(model_dir) < step:
        assert proc.poll() is None, 'training ended early:\n%s' % (proc.communicate(),)
        time.sleep(0.02)
    return latest_step(model_dir)


def tree(path):
    """Names and content hashes of the files under `path` (None if it does not exist)."""
    if not os.path.exists(path):
        return None
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, 'rb') as f:
                found[os.path.relpath(full, path)] = hashlib.md5(f.read()).hexdigest()
    return found


def assert_one_line_failure(result, pattern):
    """A non-zero exit with exactly one line on stderr, ours, matching `pattern`."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(('error: ', 'train.py: error: ', 'eval.py: error: ',
                                'export.py: error: ')), lines[0]
    assert re.search(pattern, lines[0]), lines[0]


def non_finite(checkpoint):
    """The names of the checkpoint's variables that hold a NaN or an infinity."""
    return [name for name, _ in tf.train.list_variables(checkpoint)
            if not np.all(np.isfinite(tf.train.load_variable(checkpoint, name)))]
