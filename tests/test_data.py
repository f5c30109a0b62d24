"""Input pipelines on data the tests make: CIFAR binary and python releases, ImageNet TFRecords,
digits, synthetic; malformed inputs; the download helper against a loopback HTTP server."""
import hashlib
import http.server
import io
import logging
import os
import pickle
import re
import signal
import subprocess
import tarfile
import threading
import time

import numpy as np
import pytest

from conftest import PYTHON, ROOT, child_environment
from helpers import (Payload, cifar_images, make_cifar10_bin, make_cifar_py, make_imagenet,
                     python_batch, take, write_cifar_bin)
from models.compat import tf
from utils import data
from utils.data import download
from utils.data.download import download_cifar


def test_digits_has_a_fixed_split_of_real_images():
    digits = data.get_dataset('digits')
    assert (digits.train_size, digits.test_size) == (1437, 360)
    images, labels = take(digits, training=False, batch_size=100)
    assert images.shape == (360, 8, 8, 1) and labels.shape == (360,)
    assert sorted(set(labels)) == list(range(10))
    assert images.min() == 0 and images.max() == 16
    again = take(data.get_dataset('digits'), training=False, batch_size=100)
    np.testing.assert_array_equal(labels, again[1])


def test_cifar10_binary_reads_pixels_and_labels(tmp_path):
    d, (image, label) = make_cifar10_bin(str(tmp_path))
    cifar = data.get_dataset('cifar10', str(tmp_path))
    images, labels = take(cifar, training=False, batch_size=2)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images[0], image.transpose(1, 2, 0))
    assert labels[0] == label
    train_images, _ = take(cifar, training=True, batch_size=5)
    assert train_images.shape == (15, 32, 32, 3)  # 5 files x 3, augmented but same size
    # The release directory itself works as --data_dir too.
    assert data.get_dataset('cifar10', d).kind == 'bin'


def test_cifar100_binary_uses_the_fine_label(tmp_path):
    d = os.path.join(str(tmp_path), 'cifar-100-binary')
    os.makedirs(d)
    for name in ('train.bin', 'test.bin'):
        write_cifar_bin(os.path.join(d, name), cifar_images(4, 0), [97, 3, 55, 0],
                         coarse=[19, 1, 2, 3])
    _, labels = take(data.get_dataset('cifar100', str(tmp_path)), training=False)
    assert list(labels) == [97, 3, 55, 0]


@pytest.mark.parametrize('hundred', [False, True])
def test_cifar_python_release(tmp_path, hundred):
    make_cifar_py(str(tmp_path), hundred)
    cifar = data.get_dataset('cifar100' if hundred else 'cifar10', str(tmp_path))
    assert cifar.kind == 'py'
    images, labels = take(cifar, training=False, batch_size=2)
    assert images.shape == (3, 32, 32, 3)
    expected = cifar_images(3, 1 if hundred else 5).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(images, expected)
    assert list(labels) == [(7 * (1 if hundred else 5) + j) % (100 if hundred else 10)
                            for j in range(3)]


@pytest.mark.parametrize('numpy_module', ['numpy.core.multiarray', 'numpy._core.multiarray'],
                         ids=['numpy-1', 'numpy-2'])
def test_python_batches_pickled_by_either_numpy_load(tmp_path, numpy_module):
    """numpy 2 names its array reconstructor numpy._core.multiarray, numpy 1 numpy.core: a
    CIFAR copy pickled by either loads under either (the official files are numpy 1's)."""
    pixels = cifar_images(2, 3).reshape(2, -1)
    blob = pickle.dumps({b'data': pixels, b'labels': [4, 5]}, protocol=2)
    for spelling in (b'numpy._core.multiarray', b'numpy.core.multiarray'):
        blob = blob.replace(spelling + b'\n', numpy_module.encode() + b'\n')
    assert numpy_module.encode() + b'\n_reconstruct' in blob
    path = str(tmp_path / 'data_batch_1')
    with open(path, 'wb') as f:
        f.write(blob)
    batch = data.load_python_batch(path)
    np.testing.assert_array_equal(batch[b'data'], pixels)
    assert batch[b'labels'] == [4, 5]


def test_malicious_pickle_is_refused_without_running(tmp_path):
    d = make_cifar_py(str(tmp_path))
    marker = os.path.join(str(tmp_path), 'pwned')
    with open(os.path.join(d, 'test_batch'), 'wb') as f:
        pickle.dump({b'data': Payload(marker), b'labels': [1]}, f, protocol=2)
    # The payload is real: the standard unpickler would run it.
    with pytest.raises(data.DataError, match=r'refusing to load (posix|os)\.system'):
        data.load_python_batch(os.path.join(d, 'test_batch'))
    cifar = data.get_dataset('cifar10', str(tmp_path))
    with pytest.raises(data.DataError, match='refusing'):
        take(cifar, training=False)
    assert not os.path.exists(marker)


_PIXELS = np.random.RandomState(0).randint(0, 256, size=(2, 3072))


@pytest.mark.parametrize('pixels, labels, message', [
    (_PIXELS / 255.0, [1, 2], r'pixels of type float64, expected uint8'),
    (np.full((2, 3072), np.nan, np.float32), [1, 2], r'pixels of type float32'),
    (-_PIXELS.astype(np.float64), [1, 2], r'pixels of type float64'),
    (np.random.RandomState(0).randint(200, 1000, (2, 3072)).astype(np.int16), [1, 2],
     r'pixel values 2\d\d\.\.9\d\d, expected 0-255'),
    (_PIXELS[:0], [], r'expected data of shape \(N, 3072\), N > 0, got \(0, 3072\)'),
    (_PIXELS, [1.0, float('nan')], r'label nan is not a class number'),
    (_PIXELS, [1, 3.7], r'label 3\.7 is not a class number'),
    (_PIXELS, [[1], [2]], r'labels of shape \(2, 1\), expected a flat list'),
    (_PIXELS, ['1', '2'], r'labels of type <U1, expected integers'),
], ids=['float-0-1', 'nan', 'negative', 'int16-200-999', 'no-images', 'nan-label',
        'fractional-label', '2d-labels', 'string-labels'])
def test_python_batches_of_other_values_are_refused(tmp_path, pixels, labels, message):
    d = make_cifar_py(str(tmp_path))
    path = os.path.join(d, 'data_batch_4')
    python_batch(path, pixels, labels)
    cifar = data.get_dataset('cifar10', str(tmp_path))
    with pytest.raises(data.DataError, match=re.escape(path) + ': ' + message):
        cifar.input_fn(True, 2)
    python_batch(path, _PIXELS.astype(np.int64), [1.0, 2.0])  # whole numbers of other types pass
    images, labels = take(cifar, training=True, batch_size=7)  # 4 files of 3, one of 2
    assert images.shape[0] == 14 and labels.dtype == np.int32


def test_empty_binary_file_is_refused_instead_of_hanging(tmp_path):
    d, _ = make_cifar10_bin(str(tmp_path))
    open(os.path.join(d, 'data_batch_5.bin'), 'w').close()
    with pytest.raises(data.DataError, match=r'data_batch_5\.bin: empty CIFAR binary file '
                                             r'\(0 bytes is not a positive multiple'):
        data.get_dataset('cifar10', str(tmp_path))


def test_truncated_binary_file_is_reported(tmp_path):
    d, _ = make_cifar10_bin(str(tmp_path))
    path = os.path.join(d, 'data_batch_3.bin')
    with open(path, 'r+b') as f:
        f.truncate(3073 * 2 + 100)
    with pytest.raises(data.DataError, match=r'data_batch_3\.bin: truncated'):
        data.get_dataset('cifar10', str(tmp_path))


def test_label_out_of_range_is_reported(tmp_path):
    d, _ = make_cifar10_bin(str(tmp_path))
    write_cifar_bin(os.path.join(d, 'test_batch.bin'), cifar_images(2, 0), [3, 12])
    cifar = data.get_dataset('cifar10', str(tmp_path))
    with pytest.raises(data.DataError, match=r'test_batch\.bin: label 12 out of range \[0, 10\)'):
        cifar.input_fn(False, 2)


def test_missing_and_incomplete_data_dirs_name_the_path(tmp_path):
    missing = os.path.join(str(tmp_path), 'nope')
    with pytest.raises(data.DataError, match=r'nope: no cifar10 data; expected '
                                             r'cifar-10-batches-bin/ or cifar-10-batches-py/.*'
                                             r'--download True'):
        data.get_dataset('cifar10', missing)
    d, _ = make_cifar10_bin(str(tmp_path))
    os.remove(os.path.join(d, 'data_batch_5.bin'))
    with pytest.raises(data.DataError, match=r'data_batch_5\.bin: missing'):
        data.get_dataset('cifar10', str(tmp_path))
    with pytest.raises(data.DataError, match=r'no train-\* TFRecord shards'):
        data.get_dataset('imagenet', str(tmp_path))


def test_imagenet_tfrecords(tmp_path):
    make_imagenet(str(tmp_path))
    imagenet = data.get_dataset('imagenet', str(tmp_path), image_size=16)
    images, labels = take(imagenet, training=False, batch_size=3)
    assert images.shape == (3, 16, 16, 3)
    assert list(labels) == [0, 1, 2]  # 1-based labels become 0-based
    train_images, _ = take(imagenet, training=True, batch_size=3)
    assert train_images.shape == (3, 16, 16, 3)
    assert 0 <= train_images.min() and train_images.max() <= 255


def test_imagenet_zero_based_labels_are_named_up_front(tmp_path):
    make_imagenet(str(tmp_path), first_label=0)  # an export with 0-based labels
    with pytest.raises(data.DataError, match=r'train-00000-of-00001: first record\'s '
                                             r'image/class/label is 0, expected one of 1\.\.1000'):
        data.get_dataset('imagenet', str(tmp_path), image_size=16)


def test_corrupt_tfrecords_are_named_up_front_or_fail_with_data_loss(tmp_path):
    make_imagenet(str(tmp_path))
    path = os.path.join(str(tmp_path), 'validation-00000-of-00001')
    with open(path, 'rb') as f:
        intact = f.read()
    with open(path, 'r+b') as f:  # the first record: named before any training
        f.seek(20)
        f.write(b'\xff' * 16)
    with pytest.raises(data.DataError, match=r'validation-00000-of-00001: not a readable '
                                             r'TFRecord file of tf\.train\.Examples \(corrupted'):
        data.get_dataset('imagenet', str(tmp_path), image_size=16)
    with open(path, 'wb') as f:  # the last record: met while reading
        f.write(intact[:-20] + b'\xff' * 16 + intact[-4:])
    imagenet = data.get_dataset('imagenet', str(tmp_path), image_size=16)
    with pytest.raises(tf.errors.DataLossError):
        take(imagenet, training=False)
    with open(path, 'wb') as f:
        f.write(b'')
    with pytest.raises(data.DataError, match=r'validation-00000-of-00001: empty TFRecord file'):
        data.get_dataset('imagenet', str(tmp_path), image_size=16)


def test_synthetic_mimics_a_dataset():
    synthetic = data.get_dataset('synthetic', synthetic_like='cifar100')
    images, labels = take(synthetic, training=True, batch_size=8, batches=1)
    assert images.shape == (8, 32, 32, 3) and labels.max() < 100


def _cifar_archive(tmp_path):
    src = os.path.join(str(tmp_path), 'src')
    os.makedirs(src)
    make_cifar10_bin(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        tar.add(os.path.join(src, 'cifar-10-batches-bin'), arcname='cifar-10-batches-bin')
    blob = buf.getvalue()
    with open(os.path.join(str(tmp_path), 'cifar-10-binary.tar.gz'), 'wb') as f:
        f.write(blob)
    return blob


def test_download_checks_md5_and_extracts(tmp_path, http_server):
    blob = _cifar_archive(tmp_path)
    dest = os.path.join(str(tmp_path), 'data')
    url = http_server + 'cifar-10-binary.tar.gz'
    with pytest.raises(data.DataError, match='MD5'):
        download_cifar('cifar10', dest, url=url, md5='0' * 32, progress=False)
    assert not os.path.exists(os.path.join(dest, 'cifar-10-batches-bin'))
    with pytest.raises(data.DataError, match=r'the server announces \d+ bytes, expected 5'):
        download_cifar('cifar10', dest, url=url, size=5, md5=hashlib.md5(blob).hexdigest(),
                       progress=False)
    out = download_cifar('cifar10', dest, url=url, size=len(blob),
                         md5=hashlib.md5(blob).hexdigest(), progress=False)
    assert sorted(os.listdir(out))[0] == 'data_batch_1.bin'
    assert [f for f in os.listdir(dest)] == ['cifar-10-batches-bin']  # no temporary files left
    assert data.get_dataset('cifar10', dest).kind == 'bin'
    with pytest.raises(data.DataError, match='download failed'):
        download_cifar('cifar10', os.path.join(str(tmp_path), 'other'),
                       url=http_server + 'missing.tar.gz', progress=False)


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    """/trickle: a byte every 0.2 s; /endless: zeros without end, no Content-Length;
    /headers: a header line that never ends, a byte every 0.2 s."""

    def do_GET(self):
        if self.path.startswith('/headers'):
            return self._trickle_headers()
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                if self.path.startswith('/trickle'):
                    self.wfile.write(b'x')
                    self.wfile.flush()
                    time.sleep(0.2)
                else:
                    self.wfile.write(bytes(1 << 16))
        except OSError:  # the client hung up: what the test wants
            pass

    def _trickle_headers(self):
        try:
            self.wfile.write(b'HTTP/1.0 200 OK\r\nX-Slow: ')
            while True:
                self.wfile.write(b'a')
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_server():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _HostileHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield 'http://127.0.0.1:%d/' % server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize('path, pattern', [
    ('trickle/cifar-10-binary.tar.gz', r'trickle/cifar-10-binary\.tar\.gz: stalled \(\d+ bytes in '
                                       r'the last 1 s\); stopped after \d+ bytes'),
    ('endless/cifar-10-binary.tar.gz', r'endless/cifar-10-binary\.tar\.gz: more than the 1000000 '
                                       r'bytes expected; stopped'),
    ('headers/cifar-10-binary.tar.gz', r'headers/cifar-10-binary\.tar\.gz: no response headers '
                                       r'within 1 s; stopped'),
])
def test_a_trickling_or_endless_download_is_bounded_and_leaves_nothing(
        tmp_path, hostile_server, monkeypatch, path, pattern):
    monkeypatch.setattr(download, 'STALL_SECONDS', 1.0)
    monkeypatch.setattr(download, 'MAX_BYTES', 10 ** 7)
    dest = str(tmp_path / 'data')
    with pytest.raises(data.DataError, match=pattern):
        download_cifar('cifar10', dest, url=hostile_server + path, size=10 ** 6, progress=False)
    assert os.listdir(dest) == []
    # No size given: MAX_BYTES bounds it.
    if path.startswith('endless'):
        with pytest.raises(data.DataError, match=r'more than the 10000000 bytes'):
            download_cifar('cifar10', dest, url=hostile_server + path, progress=False)
        assert os.listdir(dest) == []


def test_a_file_url_that_is_no_regular_file_is_refused_unopened(tmp_path):
    fifo = str(tmp_path / 'cifar-10-binary.tar.gz')
    os.mkfifo(fifo)  # opening it would wait for a writer
    dest = str(tmp_path / 'data')
    with pytest.raises(data.DataError, match=r'file://.*cifar-10-binary\.tar\.gz: a FIFO, not a '
                                             r'file to download'):
        download_cifar('cifar10', dest, url='file://' + fifo, size=10, progress=False)
    assert os.listdir(dest) == []


@pytest.mark.slow
def test_sigterm_during_a_download_removes_the_partial_file(tmp_path, hostile_server):
    """The real command: SIGTERM's default action would end it before any clean-up."""
    dest = str(tmp_path / 'data')
    env = dict(child_environment(), **{download.MIRROR_ENV: hostile_server + 'trickle/'})
    proc = subprocess.Popen([PYTHON, os.path.join(ROOT, 'train.py'), '--dataset', 'cifar10',
                             '--data_dir', dest, '--download', 'True', '--model_dir',
                             str(tmp_path / 'run')], cwd=ROOT, env=env, universal_newlines=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not (os.path.isdir(dest) and os.listdir(dest)):  # the partial file exists
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 143 and err.strip().splitlines() == [
        'error: terminated (SIGTERM) during a download; the partial file is removed'], err
    assert os.listdir(dest) == [] and not (tmp_path / 'run').exists()


def test_sigterm_inside_the_progress_bars_constructor_waits_for_the_next_read(tmp_path):
    """Raised in a constructor, the exit leaves a half-built object whose collection prints a
    traceback (what CI once saw): the signal is held until the download next waits."""
    source, dest = tmp_path / 'archive', tmp_path / 'data'
    source.write_bytes(b'x' * 4096)
    script = '\n'.join([
        'import os, signal, sys, tqdm',
        'sys.path.insert(0, %r)' % ROOT,
        'kept, os_null = os.dup(2), os.open(os.devnull, os.O_WRONLY)',
        'os.dup2(os_null, 2)  # what TensorFlow prints as it loads',
        'from utils.data.download import download_cifar',
        'os.dup2(kept, 2)',
        'built = tqdm.tqdm.__init__',
        'def init(self, *args, **kwargs):',
        '    os.kill(os.getpid(), signal.SIGTERM)',
        '    built(self, *args, **kwargs)',
        '    print("built", flush=True)',
        'tqdm.tqdm.__init__ = init',
        'download_cifar("cifar10", %r, url="file://%s", size=4096, md5="0" * 32)' % (
            str(dest), source)])
    proc = subprocess.run([PYTHON, '-c', script], env=child_environment(), cwd=ROOT,
                          universal_newlines=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert (proc.returncode, proc.stdout, proc.stderr.splitlines()) == (143, 'built\n', [
        'error: terminated (SIGTERM) during a download; the partial file is removed'])
    assert os.listdir(str(dest)) == []


def test_the_mirror_is_tried_before_the_official_address(tmp_path, http_server, monkeypatch,
                                                         caplog):
    blob = _cifar_archive(tmp_path)
    monkeypatch.setenv(download.MIRROR_ENV, http_server)
    monkeypatch.setitem(download.ARCHIVES, 'cifar10', download.ARCHIVES['cifar10'][:1] + (
        len(blob), hashlib.md5(blob).hexdigest(), 'cifar-10-batches-bin'))
    caplog.set_level(logging.INFO)
    download.LOG.addHandler(caplog.handler)  # the CLI's set-up may stop it propagating
    try:
        out = download_cifar('cifar10', str(tmp_path / 'data'), progress=False)
    finally:
        download.LOG.removeHandler(caplog.handler)
    assert sorted(os.listdir(out))[0] == 'data_batch_1.bin'
    assert 'downloading %scifar-10-binary.tar.gz' % http_server in caplog.text


def test_download_refuses_archive_escaping_the_directory(tmp_path, http_server):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        info = tarfile.TarInfo('../evil.txt')
        info.size = 4
        tar.addfile(info, io.BytesIO(b'evil'))
    blob = buf.getvalue()
    with open(os.path.join(str(tmp_path), 'evil.tar.gz'), 'wb') as f:
        f.write(blob)
    dest = os.path.join(str(tmp_path), 'data')
    with pytest.raises(data.DataError, match='refusing archive member'):
        download_cifar('cifar10', dest, url=http_server + 'evil.tar.gz',
                       md5=hashlib.md5(blob).hexdigest(), progress=False)
    assert not os.path.exists(os.path.join(str(tmp_path), 'evil.txt'))
