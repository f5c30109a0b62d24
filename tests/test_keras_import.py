"""tf.keras.applications DenseNet-121 weights (.h5, random, no download) in our graph, through
models.keras_import and the --init_from_keras flags of train.py, eval.py and export.py."""
import re
import subprocess

import numpy as np
import pytest

import models
from conftest import PYTHON, ROOT
from models.compat import tf
from models.keras_import import load_keras_weights, preprocess_input
from utils.predict import Predictor

SIZE = 32  # Keras DenseNet-121 takes 32x32 inputs; small keeps the tests fast


# Run in a child of this stack's Python, eagerly: in this process's graph mode Keras saves an
# .h5 file with one session call per layer, two thirds of the fixture's time. Writes the file and
# the images with Keras' logits for them.
KERAS_FILE = """
import sys
import numpy as np
import tensorflow as tf
if not tf.executing_eagerly():
    tf.compat.v1.enable_eager_execution()  # TensorFlow 1.15
path, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.RandomState(0)
images = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
keras = tf.keras.applications.DenseNet121(weights=None, input_shape=(size, size, 3))
values = []
for w in keras.weights:
    shape = w.shape.as_list()
    if 'moving_variance' in w.name or 'gamma' in w.name:
        values.append(1.0 + 0.2 * rng.rand(*shape))
    else:
        values.append(0.05 * rng.randn(*shape))
keras.set_weights(values)
keras.save_weights(path)
# Logits: Keras' classifier (fc1000 in keras-applications 1.0.8, predictions in Keras 2.x)
# applies softmax, so take the pooled features times its weights.
features = tf.keras.Model(keras.input, keras.get_layer('avg_pool').output)
kernel, bias = keras.layers[-1].get_weights()
pixels = tf.keras.applications.densenet.preprocess_input(images.copy())
np.savez(out, images=images, logits=features.predict(pixels).dot(kernel) + bias)
"""


@pytest.fixture(scope='module')
def keras121(tmp_path_factory):
    """(.h5 path, raw-pixel images, the Keras model's logits for them) of a random DenseNet-121
    (this stack's tf.keras: tf-keras where models.compat chose it)."""
    directory = tmp_path_factory.mktemp('keras')
    path, arrays = str(directory / 'densenet121.h5'), str(directory / 'expected.npz')
    proc = subprocess.run([PYTHON, '-c', KERAS_FILE, path, arrays, str(SIZE)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)  # this process's environment, as compat set it
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(arrays) as expected:
        return path, expected['images'], expected['logits']


def _relative_error(got, expected):
    return np.max(np.abs(got - expected)) / np.max(np.abs(expected))


def test_preprocess_input_is_keras_torch_mode():
    images = np.random.RandomState(1).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    expected = tf.keras.applications.densenet.preprocess_input(images.copy())
    np.testing.assert_allclose(preprocess_input(images), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_keras_densenet121_weights_give_the_same_logits(keras121):
    path, images, expected = keras121
    with tf.Graph().as_default():
        logits = models.densenet121(tf.constant(preprocess_input(images)), 1000,
                                    data_format='channels_last', training=False)()
        with tf.Session() as sess:
            assert load_keras_weights(sess, path, tf.global_variables()) == []
            got = sess.run(logits)
    assert _relative_error(got, expected) <= 1e-4


@pytest.mark.slow
def test_export_init_from_keras_classifies_raw_pixels_as_keras_does(keras121, tmp_path, entry):
    path, images, expected = keras121
    pb = str(tmp_path / 'in1k.pb')
    out = entry('export.py', '--init_from_keras', path, '--model', 'densenet121',
              '--image_size', str(SIZE), '--output', pb).stdout
    assert re.search(r"\[None, %d, %d, 3\] raw pixels" % (SIZE, SIZE), out), out
    assert _relative_error(Predictor(pb).logits_of(images), expected) <= 1e-4


@pytest.mark.slow
def test_train_init_from_keras_fine_tunes_with_a_new_classifier(keras121, tmp_path, entry):
    """A DenseNet-121 on 10 classes starts from the file (naive: every mode has the same
    variables, and its graph builds fastest): at learning rate 0 the saved
    kernels are the file's, and the 1000-way classifier is replaced by a fresh 10-way one."""
    path = keras121[0]
    model_dir = str(tmp_path / 'run')
    out = entry('train.py', '--dataset', 'synthetic', '--synthetic_like', 'cifar10',
              '--model', 'densenet121', '--batch_size', '2', '--max_steps', '1',
              '--learning_rate', '0', '--epochs_per_eval', '0', '--efficient', 'False',
              '--init_from_keras', path, '--model_dir', model_dir).stdout
    assert 'new classifier: densenet/classifier/kernel [1024, 10]' in out, out
    import h5py
    with h5py.File(path, 'r') as f:
        for keras_name, ours in (('conv1/conv/conv1/conv/kernel:0', 'stem/conv0/kernel'),
                                 ('conv4_block24_2_conv/conv4_block24_2_conv/kernel:0',
                                  'denseblock3/denselayer24/conv2/kernel'),
                                 ('bn/bn/gamma:0', 'final/final_norm/gamma')):
            np.testing.assert_array_equal(
                tf.train.load_variable(model_dir, 'densenet/' + ours), f[keras_name][()])
    assert tf.train.load_variable(model_dir, 'densenet/classifier/kernel').shape == (1024, 10)


def test_a_file_of_another_architecture_is_refused(tmp_path):
    path = str(tmp_path / 'small.h5')
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.keras.backend.set_session(sess)
        inputs = tf.keras.Input((8, 8, 3))
        out = tf.keras.layers.Conv2D(4, 3, name='conv1/conv', use_bias=False)(inputs)
        tf.keras.Model(inputs, out).save_weights(path)
    with tf.Graph().as_default():
        models.densenet121(tf.placeholder(tf.float32, [None, 32, 32, 3]), 1000,
                           data_format='channels_last', training=False)()
        with tf.Session() as sess:
            with pytest.raises(ValueError, match=r'conv1/conv/kernel is \[3, 3, 3, 4\], '
                                                 r'densenet/stem/conv0/kernel needs'):
                load_keras_weights(sess, path, tf.global_variables())


@pytest.mark.parametrize('args, message', [
    (['--model', 'densenet_bc'], r'Keras weights exist for densenet121/densenet169/densenet201, '
                                 r'not densenet_bc'),
    (['--model', 'densenet121', '--init_from_keras', '/nonexistent.h5'],
     r'/nonexistent.h5: no such Keras weights file'),
])
def test_train_refuses_a_bad_init_from_keras_before_building(tmp_path, entry, args, message):
    argv = ['--dataset', 'synthetic', '--model_dir', str(tmp_path / 'run')] + args
    if '--init_from_keras' not in argv:
        argv += ['--init_from_keras', str(tmp_path)]
    proc = entry('train.py', *argv, check=False)
    assert proc.returncode == 1 and re.search(message, proc.stderr), proc.stderr
    assert not (tmp_path / 'run').exists()


def _foreign_hdf5(path):
    import h5py
    with h5py.File(str(path), 'w') as f:
        f.create_dataset('weights', data=np.zeros(3))


def _keras_like(layer_names=(b'conv1_conv',), weight_names=(b'conv1_conv/kernel:0',),
                shape=(3, 3), dtype='f4', make_layer=True):
    """A writer of a Keras-shaped .h5 file, damaged as the arguments say."""
    def write(path):
        import h5py
        with h5py.File(str(path), 'w') as f:
            f.attrs['layer_names'] = layer_names
            if make_layer:
                layer = f.create_group('conv1_conv')
                if weight_names is not None:
                    layer.attrs['weight_names'] = weight_names
                if shape is not None:
                    layer.create_dataset('conv1_conv/kernel:0', shape=shape, dtype=dtype)
    return write


@pytest.mark.slow
@pytest.mark.parametrize('write, message', [
    (lambda path: path.write_text('not HDF5'), r'not a readable \.h5 file'),
    (lambda path: path.write_bytes(b''), r'not a readable \.h5 file'),
    (_foreign_hdf5, r'not a Keras weights file \(no layer_names\)'),
    (_keras_like(make_layer=False), r'layer conv1_conv is listed but missing'),
    (_keras_like(weight_names=None), r'layer conv1_conv has no weight_names'),
    (_keras_like(layer_names=7), r'layer_names is not a list of names'),
    (_keras_like(weight_names=[1, 2]), r'layer conv1_conv: weight_names is not a list'),
    (_keras_like(shape=None), r'weight conv1_conv/conv1_conv/kernel:0 is listed but missing'),
    (_keras_like(dtype='S4'), r'kernel:0 is listed but not an array of floats'),
    (_keras_like(shape=(2 ** 50, 8)), r'kernel:0 declares \[1125899906842624, 8\] values '
                                      r'\(36028797018963968 bytes\), more than the file'),
], ids=['text', 'empty', 'foreign-hdf5', 'missing-layer', 'no-weight-names', 'names-not-a-list',
        'weight-names-not-names', 'missing-weight', 'not-floats', '32-PiB'])
def test_the_keras_file_is_checked_whole_before_anything_is_read_or_written(
        tmp_path, entry, write, message):
    """A file that is no Keras weights file is refused before the graph is built, and before
    --model_dir is created (the weights are assigned later, when the session starts); its
    structure and declared sizes are checked before any weight is read."""
    bad = tmp_path / 'weights.h5'
    write(bad)
    model_dir = tmp_path / 'run'
    proc = entry('train.py', '--dataset', 'synthetic', '--model', 'densenet121', '--efficient',
                 'False', '--batch_size', '2', '--max_steps', '1', '--init_from_keras', str(bad),
                 '--model_dir', str(model_dir), check=False)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1
    assert re.match(r'error: %s: .*%s' % (re.escape(str(bad)), message), proc.stderr), proc.stderr
    assert not model_dir.exists()
    exported = entry('export.py', '--init_from_keras', str(bad), '--output',
                     str(tmp_path / 'k.pb'), check=False)
    assert exported.returncode == 1 and len(exported.stderr.splitlines()) == 1
    assert re.search(message, exported.stderr) and not (tmp_path / 'k.pb').exists()
