"""MNIST / Fashion-MNIST: the IDX reader on files the tests write (gzipped and raw), every kind of
bad file, the download against a loopback HTTP server, and train -> eval -> export on a slice."""
import gzip
import json
import os
import re
import shutil
import struct

import numpy as np
import pytest

from helpers import IDX_NAMES as NAMES, make_idx_dataset, serve_idx, take, write_idx
from models.compat import tf
from utils import data
from utils.data import download
from utils.export import INPUT, LOGITS


@pytest.mark.parametrize('gz', [True, False], ids=['gzip', 'raw'])
def test_reader_reads_both_splits_and_the_pipeline_shapes_them(tmp_path, gz):
    arrays = make_idx_dataset(str(tmp_path), gz=gz)
    fashion = data.get_dataset('fashion_mnist', str(tmp_path))
    assert (fashion.train_size, fashion.test_size) == (40, 20)
    images, labels = take(fashion, training=False, batch_size=8)
    np.testing.assert_array_equal(images[..., 0], arrays['t10k'][0])
    np.testing.assert_array_equal(labels, arrays['t10k'][1])
    assert images.dtype == np.float32 and labels.dtype == np.int32
    train_images, _ = take(data.get_dataset('mnist', str(tmp_path)), training=True,
                            batch_size=8)
    assert train_images.shape == (40, 28, 28, 1)
    # augmentation shifts by at most two pixels: every bright mark stays near the diagonal
    rows, cols = np.nonzero(train_images[..., 0] == 255)[1:]
    assert len(rows) == 40 and np.all(np.abs(rows - cols) <= 4)


def test_mnist_never_mirrors_and_fashion_does(tmp_path):
    make_idx_dataset(str(tmp_path), train=200)
    mirrored = {}
    for name in ('mnist', 'fashion_mnist'):
        images, labels = take(data.get_dataset(name, str(tmp_path)), training=True,
                               batch_size=50)
        rows, cols = np.nonzero(images[..., 0] == 255)[1:]
        # a mark at (10 + c, 10 + c) shifted by up to 2 pixels; mirrored it lands near 17 - c
        mirrored[name] = np.sum(np.abs(rows - cols) > 4)
    assert mirrored['mnist'] == 0 and mirrored['fashion_mnist'] > 20


def _truncated(d):
    path = os.path.join(d, 'train-images-idx3-ubyte')
    with open(path, 'r+b') as f:
        f.truncate(16 + 28 * 28 * 3 + 5)
    return path, r'truncated IDX file'


def _patch(d, name, data, offset=0, mode='r+b'):
    """Writes `data` into IDX file `name` at `offset` (mode 'ab': at its end); its path."""
    path = os.path.join(d, name)
    with open(path, mode) as f:
        f.seek(offset)
        f.write(data)
    return path


def _bad_magic(d):
    return (_patch(d, 't10k-labels-idx1-ubyte', b'\x00\x00\x08\x03'),
            r'magic number 0x00000803, expected 0x00000801')


def _count_mismatch(d):
    path = os.path.join(d, 'train-labels-idx1-ubyte')
    write_idx(path, np.arange(39) % 10)
    return path, r'holds 39 labels but .*train-images-idx3-ubyte holds 40 images'


def _label_out_of_range(d):
    path = os.path.join(d, 'train-labels-idx1-ubyte')
    write_idx(path, np.arange(40) % 10 + (np.arange(40) == 7) * 5)
    return path, r'label 12 out of range \[0, 10\)'


def _wrong_size(d):
    path = os.path.join(d, 't10k-images-idx3-ubyte')
    write_idx(path, np.zeros((20, 32, 32)))
    return path, r'images of 32x32 pixels, expected 28x28'


def _missing(d):
    path = os.path.join(d, 't10k-images-idx3-ubyte')
    os.remove(path)
    return path, r'missing \(expected t10k-images-idx3-ubyte\.gz or t10k-images-idx3-ubyte\)'


def _bad_gzip(d):
    path = os.path.join(d, 'train-images-idx3-ubyte')
    with open(path, 'rb') as f:
        blob = gzip.compress(f.read())
    os.remove(path)
    with open(path + '.gz', 'wb') as f:
        f.write(blob[:len(blob) // 2])
    return path + '.gz', r'unreadable'


def _overlong(d):
    return _patch(d, 't10k-labels-idx1-ubyte', b'\x01', mode='ab'), r'overlong IDX file'


def _wrapping_header(d):
    """Dimensions whose product wraps int64 to a small number: 2^32-1 x 2^32-1 x ... ."""
    path = _patch(d, 'train-images-idx3-ubyte', struct.pack('>3I', 2 ** 32 - 1, 2 ** 32 - 1,
                                                            2 ** 31), offset=4)
    return path, r'announces 4294967295x4294967295x2147483648 values .* more than the'


def _gzip_bomb(d):
    """A plausible header followed by far more zeros than it announces, compressed ~1000:1:
    read whole, it would take 200 MB; read as the header says, 16 KB."""
    path = os.path.join(d, 't10k-images-idx3-ubyte')
    os.remove(path)
    with gzip.open(path + '.gz', 'wb') as f:
        f.write(struct.pack('>HBB3I', 0, 8, 3, 20, 28, 28))  # the test split's 20 labels
        for _ in range(200):
            f.write(bytes(2 ** 20))
    return path + '.gz', r'overlong IDX file \(more than 15696 bytes'


def _directory(d):
    path = os.path.join(d, 'train-labels-idx1-ubyte')
    os.remove(path)
    os.mkdir(path)
    return path, r'not a regular file'


def _fifo(d):
    path = os.path.join(d, 'train-labels-idx1-ubyte')
    os.remove(path)
    os.mkfifo(path)
    return path, r'not a regular file'


def _symlink_loop(d):
    path = os.path.join(d, 'train-labels-idx1-ubyte')
    os.remove(path)
    os.symlink(path, path)
    return path, r'unreadable \(Too many levels of symbolic links\)'


BAD_FILES = [_truncated, _bad_magic, _count_mismatch, _label_out_of_range, _wrong_size,
             _missing, _bad_gzip, _overlong, _wrapping_header, _gzip_bomb, _directory, _fifo,
             _symlink_loop]


@pytest.mark.parametrize('damage', BAD_FILES, ids=[f.__name__[1:] for f in BAD_FILES])
def test_a_bad_file_is_named(tmp_path, damage):
    make_idx_dataset(str(tmp_path), gz=False)
    path, pattern = damage(str(tmp_path))
    with pytest.raises(data.DataError) as error:
        data.get_dataset('mnist', str(tmp_path))
    assert path in str(error.value)
    assert re.search(pattern, str(error.value)), str(error.value)


def test_fashion_mnist_reads_the_system_package_without_data_dir(tmp_path, monkeypatch):
    system_dir = str(tmp_path / 'usr-share')
    monkeypatch.setattr(data.FashionMnist, 'SYSTEM_DIR', system_dir)
    assert data.default_data_dir('fashion_mnist') is None
    make_idx_dataset(system_dir, train=30)
    assert data.default_data_dir('fashion_mnist') == system_dir
    assert data.default_data_dir('mnist') is None and data.default_data_dir('cifar10') is None
    assert data.get_dataset('fashion_mnist', system_dir).train_size == 30


def test_missing_directory_says_how_to_get_the_data(tmp_path):
    with pytest.raises(data.DataError, match=r'nowhere: no fashion_mnist data directory .*'
                                             r'--download True or, on Debian'):
        data.get_dataset('fashion_mnist', str(tmp_path / 'nowhere'))


def test_spec_and_synthetic_need_no_files():
    spec = data.spec('fashion_mnist')
    assert spec.image_shape == (28, 28, 1) and spec.num_classes == 10
    synthetic = data.get_dataset('synthetic', synthetic_like='mnist')
    images, labels = take(synthetic, training=True, batch_size=4, batches=1)
    assert images.shape == (4, 28, 28, 1) and labels.max() < 10


def test_download_checks_each_md5_and_falls_back_to_the_next_address(tmp_path, http_server):
    md5s = serve_idx(str(tmp_path))
    dest = str(tmp_path / 'data')
    wrong = dict(md5s, **{'train-labels-idx1-ubyte.gz': '0' * 32})  # the last one fetched
    with pytest.raises(data.DataError, match=r'train-labels-idx1-ubyte\.gz: MD5 [0-9a-f]{32}, '
                                             r'expected 0{32}'):
        download.download_idx('mnist', dest, [http_server + 'official/'], wrong, progress=False)
    # the three good files are kept; the bad one and its temporary file are not
    assert sorted(os.listdir(dest)) == sorted(n + '.gz' for n in NAMES if 'train-labels' not in n)
    got = download.download_idx('mnist', dest, [http_server + 'gone/', http_server + 'official/'],
                                md5s, progress=False)
    assert got == dest and sorted(os.listdir(dest)) == sorted(n + '.gz' for n in NAMES)
    assert data.get_dataset('mnist', dest).train_size == 40
    with pytest.raises(data.DataError, match=r'gone/t10k-images-idx3-ubyte\.gz: download '
                                             r'failed'):
        download.download_idx('fashion_mnist', str(tmp_path / 'other'), [http_server + 'gone/'],
                              md5s, progress=False)


@pytest.mark.slow
def test_train_downloads_each_dataset_into_its_own_directory(tmp_path, http_server, entry,
                                                             monkeypatch):
    md5s = serve_idx(str(tmp_path))
    for name in ('mnist', 'fashion_mnist'):
        monkeypatch.setitem(download.IDX_FILES, name, ([http_server + 'official/'], md5s))
        monkeypatch.setitem(download.IDX_SIZES, name, dict.fromkeys(md5s))  # unknown: bounded
    monkeypatch.setattr(data.FashionMnist, 'SYSTEM_DIR', str(tmp_path / 'no-package'))
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    out = entry('train.py', '--dataset', 'fashion_mnist', '--download', 'True', '--model_dir',
                'run', '--max_steps', '2', '--depth', '16', '--growth_rate', '4',
                '--batch_size', '8', '--epochs_per_eval', '0')
    assert 'done at step 2' in out.stdout
    assert sorted(os.listdir(str(work / 'data' / 'fashion_mnist'))) == sorted(
        n + '.gz' for n in NAMES)
    assert data.default_data_dir('mnist', download=True) == os.path.join('data', 'mnist')
    assert data.default_data_dir('cifar10', download=True) == 'data'
    assert download.download('mnist', 'data/mnist', progress=False) == 'data/mnist'
    assert sorted(os.listdir(str(work / 'data'))) == ['fashion_mnist', 'mnist']


def test_official_addresses_and_checksums_are_complete():
    for name in data.DOWNLOADABLE:
        if name in download.IDX_FILES:
            urls, md5s = download.IDX_FILES[name]
            assert sorted(md5s) == sorted(n + '.gz' for n in NAMES)
            assert all(re.match(r'^[0-9a-f]{32}$', m) for m in md5s.values())
            assert all(u.startswith('http') and u.endswith('/') for u in urls)
            assert sorted(download.IDX_SIZES[name]) == sorted(md5s)
        else:
            assert name in download.ARCHIVES


@pytest.mark.slow
def test_train_eval_export_on_a_slice(tmp_path, entry):
    data_dir, model_dir = str(tmp_path / 'fashion'), str(tmp_path / 'run')
    arrays = make_idx_dataset(data_dir, train=128, test=30)
    small = ['--depth', '16', '--growth_rate', '4', '--batch_size', '32']
    out = entry('train.py', '--dataset', 'fashion_mnist', '--data_dir', data_dir,
                '--model_dir', model_dir, '--max_steps', '8', '--log_every_steps', '4', *small)
    assert re.search(r'on fashion_mnist: batch 32', out.stdout), out.stdout
    with open(os.path.join(model_dir, 'config.json')) as f:
        assert json.load(f)['dataset'] == 'fashion_mnist'
    evaluated = entry('eval.py', '--model_dir', model_dir, '--data_dir', data_dir)
    assert re.search(r'\(step 8\): loss [\d.]+, top-1 [\d.]+% on 30 test images',
                     evaluated.stdout), evaluated.stdout
    shutil.rmtree(data_dir)  # export reads no data
    pb = str(tmp_path / 'fashion.pb')
    entry('export.py', '--model_dir', model_dir, '--output', pb)
    with tf.Graph().as_default() as graph:
        graph_def = tf.GraphDef()
        with open(pb, 'rb') as f:
            graph_def.ParseFromString(f.read())
        tf.import_graph_def(graph_def, name='')
        images = graph.get_tensor_by_name(INPUT + ':0')
        assert images.shape.as_list() == [None, 28, 28, 1]
        with tf.Session() as sess:
            logits = sess.run(graph.get_tensor_by_name(LOGITS + ':0'),
                              {images: arrays['t10k'][0][:3, ..., None].astype(np.float32)})
    assert logits.shape == (3, 10) and np.all(np.isfinite(logits))
