"""export.py: frozen graph and SavedModel agree with the evaluation graph; errors; --predict."""
import json
import os
import re
import struct
import subprocess

import numpy as np
import pytest

from conftest import PYTHON, ROOT, call_main, child_environment
from models.compat import tf
from utils import data
from utils.config import ModelConfig
from utils.inference import inference
from utils.predict import Predictor, read_images

TRAINING_OPS = ('VarHandleOp', 'VariableV2', 'ReadVariableOp', 'AssignVariableOp', 'Assign',
                'IteratorV2', 'IteratorGetNext', 'IdentityN', 'SaveV2', 'RestoreV2')


@pytest.fixture(scope='module')
def exported(trained_run, tmp_path_factory):
    """The session's float32 run exported once: (frozen graph, SavedModel directory)."""
    root = tmp_path_factory.mktemp('exported')
    pb, saved_model = str(root / 'model.pb'), str(root / 'saved')
    assert call_main('export.py', '--model_dir', trained_run.model_dir, '--output', pb,
                     '--saved_model', saved_model) == 0
    return pb, saved_model


@pytest.fixture
def trained(trained_run, fp16_run):
    """The session's run directories: float32 (trained with recomputation; the variables are
    those of every mode) and fp16 (float32 master weights and a loss scale)."""
    return {'fp32': trained_run.model_dir, 'fp16': fp16_run.model_dir}


def _eval_graph_logits(model_dir, images):
    """Logits of the checkpoint through utils.inference, the graph eval.py builds."""
    model = ModelConfig.load(model_dir)
    with tf.Graph().as_default():
        logits, _ = inference(tf.constant(images), data.spec('digits'), model, False,
                              'channels_last')
        with tf.Session() as sess:
            tf.train.Saver().restore(sess, tf.train.latest_checkpoint(model_dir))
            return sess.run(logits)


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['fp32', 'fp16'])
def test_frozen_graph_and_saved_model_match_the_eval_graph(trained, tmp_path, entry, kind):
    pb, saved_model = str(tmp_path / 'model.pb'), str(tmp_path / 'saved')
    out = entry('export.py', '--model_dir', trained[kind], '--output', pb,
              '--saved_model', saved_model).stdout
    assert re.search(r"input 'input' float32 \[None, 8, 8, 1\]", out), out
    images = data.spec('digits').test_images[:16]
    expected = _eval_graph_logits(trained[kind], images)

    predictor = Predictor(pb)
    assert np.max(np.abs(predictor.logits_of(images) - expected)) <= 1e-5
    op_types = {node.op for node in predictor.graph.as_graph_def().node}
    assert not op_types & set(TRAINING_OPS), op_types & set(TRAINING_OPS)
    assert not [t for t in op_types if 'Grad' in t or t.startswith('Apply')]
    params = sum(np.prod(v.shape) for v in [tf.train.load_variable(trained[kind], n) for n, _ in
                 tf.train.list_variables(trained[kind]) if n.startswith('densenet/')])
    assert os.path.getsize(pb) < 4 * params * 1.2 + 200000

    with tf.Graph().as_default(), tf.Session() as sess:
        meta = tf.saved_model.loader.load(sess, [tf.saved_model.SERVING], saved_model)
        signature = meta.signature_def['serving_default']
        logits = sess.run(signature.outputs['logits'].name,
                          {signature.inputs['images'].name: images})
        classes = sess.run(signature.outputs['classes'].name,
                           {signature.inputs['images'].name: images})
    assert np.max(np.abs(logits - expected)) <= 1e-5
    np.testing.assert_array_equal(classes, np.argmax(expected, 1))


@pytest.mark.slow
def test_predict_reads_png_files(exported, tmp_path, entry):
    pb = exported[0]
    digits = data.spec('digits')
    paths = []
    with tf.Graph().as_default(), tf.Session() as sess:
        for i in range(3):
            path = str(tmp_path / ('digit%d.png' % i))
            pixels = digits.test_images[i].astype(np.uint8)  # 0..16 fit a PNG exactly
            with open(path, 'wb') as f:
                f.write(sess.run(tf.image.encode_png(pixels)))
            paths.append(path)
    images = read_images(paths, (8, 8, 1))
    np.testing.assert_array_equal(images, digits.test_images[:3])
    # GIF and BMP decode only to RGB: a grey model gets them made grey (grey RGB stays exact).
    with tf.Graph().as_default(), tf.Session() as sess:
        rgb = np.repeat(digits.test_images[0].astype(np.uint8), 3, axis=-1)
        bmp = str(tmp_path / 'digit.bmp')
        with open(bmp, 'wb') as f:
            f.write(_bmp(rgb))
    np.testing.assert_array_equal(read_images([bmp], (8, 8, 1))[0], digits.test_images[0])
    out = entry('export.py', '--predict', pb, *paths).stdout
    for path in paths:
        assert re.search(re.escape(path) + r': \d+ \(0\.\d{3}\), \d+', out), out


def _bmp(rgb):
    """An uncompressed 24-bit BMP of an (H, W, 3) uint8 image (rows bottom-up, BGR, padded)."""
    height, width, _ = rgb.shape
    row = width * 3 + (-width * 3) % 4
    pixels = b''.join(rgb[y, :, ::-1].tobytes().ljust(row, b'\0')
                      for y in range(height - 1, -1, -1))
    header = struct.pack('<2sIHHI', b'BM', 54 + len(pixels), 0, 0, 54)
    info = struct.pack('<IiiHHIIiiII', 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


@pytest.mark.slow
def test_export_errors_are_one_line(trained, tmp_path, entry):
    no_checkpoint = entry('export.py', '--model_dir', str(tmp_path), '--output', 'x.pb',
                          check=False)
    assert no_checkpoint.returncode == 1 and 'no checkpoint found' in no_checkpoint.stderr
    unwritable = entry('export.py', '--model_dir', trained['fp32'], '--output',
                       str(tmp_path / 'missing' / 'x.pb'), check=False)
    assert unwritable.returncode == 1 and 'missing to write it in' in unwritable.stderr
    # Point the saved architecture at another growth rate: the checkpoint no longer fits.
    other = str(tmp_path / 'other')
    os.makedirs(other)
    with open(os.path.join(trained['fp32'], 'config.json')) as f:
        config = json.load(f)
    config['growth_rate'] = 6
    with open(os.path.join(other, 'config.json'), 'w') as f:
        json.dump(config, f)
    mismatch = entry('export.py', '--model_dir', other, '--output', str(tmp_path / 'x.pb'),
                     '--checkpoint', tf.train.latest_checkpoint(trained['fp32']), check=False)
    assert mismatch.returncode == 1 and 'Traceback' not in mismatch.stderr
    # The first mismatch in build order: the stem's 2k filters.
    assert re.search(r'another architecture: densenet/stem/conv0/kernel is \[3, 3, 1, 8\] '
                     r'there, \[3, 3, 1, 12\] in this model', mismatch.stderr), \
        mismatch.stderr


def _unknown_op_graph(path):
    graph_def = tf.GraphDef()
    graph_def.node.add(name='x', op='NoSuchOp')
    path.write_bytes(graph_def.SerializeToString())


def _variable_input_graph(path):
    with tf.Graph().as_default() as graph:
        v = tf.Variable(1.0, name='input')
        tf.identity(v, name='logits')
        tf.identity(v, name='probabilities')
    path.write_bytes(graph.as_graph_def().SerializeToString())


def _channels_first_graph(path):
    """What a GPU run frozen by hand (export.py always writes channels_last) can hold."""
    with tf.Graph().as_default() as graph:
        images = tf.placeholder(tf.float32, [None, 8, 8, 1], name='input')
        x = tf.transpose(images, [0, 3, 1, 2])
        x = tf.nn.conv2d(x, tf.ones([3, 3, 1, 10]), [1, 1, 1, 1], 'SAME', data_format='NCHW',
                         name='features')
        logits = tf.reduce_mean(x, [2, 3], name='logits')
        tf.nn.softmax(logits, name='probabilities')
    path.write_bytes(graph.as_graph_def().SerializeToString())


@pytest.mark.slow
@pytest.mark.parametrize('write, message', [
    ('saved_model', r'saved_model\.pb: not a readable frozen graph'),
    ('meta', r'model\.ckpt-40\.meta: not a readable frozen graph'),
    (_unknown_op_graph, r'graph\.pb: not a graph this TensorFlow can run \(Op type not '
                        r'registered \'NoSuchOp\''),
    (_variable_input_graph, r'graph\.pb: not a graph written by export\.py \(its \'input\' is a '
                            r'Variable'),
    (_channels_first_graph, r'graph\.pb: computes in channels_first \(node features\), which '
                            r'TensorFlow runs only on a GPU'),
    ('image', r'bad\.png: not a PNG, JPEG, GIF or BMP image \(it starts with b\'not an i\'\)'),
    ('empty image', r'bad\.png: not a PNG, JPEG, GIF or BMP image \(an empty file\)'),
    ('broken jpeg', r'bad\.png: not a readable JPEG image'),
], ids=['saved-model', 'meta-graph', 'unknown-op', 'variable-input', 'channels-first',
        'bad-image', 'empty-image', 'broken-jpeg'])
def test_predict_errors_name_the_file(trained, exported, tmp_path, capfd, write, message):
    """In this process, its file descriptors captured: TensorFlow's own log lines count too."""
    (model_pb, saved_model), image = exported, str(tmp_path / 'digit.png')
    with tf.Graph().as_default(), tf.Session() as sess:
        png = sess.run(tf.image.encode_png(np.zeros((8, 8, 1), np.uint8)))
    with open(image, 'wb') as f:
        f.write(png)
    if write == 'saved_model':
        model_pb = os.path.join(saved_model, 'saved_model.pb')
    elif write == 'meta':
        model_pb = os.path.join(trained['fp32'], 'model.ckpt-40.meta')
    elif write in ('image', 'empty image', 'broken jpeg'):
        image = str(tmp_path / 'bad.png')
        with open(image, 'wb') as f:
            f.write({'image': b'not an image', 'empty image': b'',
                     'broken jpeg': b'\xff\xd8\xff\xe0' + bytes(100)}[write])
    else:
        model_pb = str(tmp_path / 'graph.pb')
        write(tmp_path / 'graph.pb')
    capfd.readouterr()
    code = call_main('export.py', '--predict', model_pb, image)
    stderr = capfd.readouterr().err
    assert code == 1 and len(stderr.splitlines()) == 1, stderr
    assert re.match(r'error: .*' + message, stderr), stderr


@pytest.mark.slow
def test_an_mfm_model_learns_evaluates_and_exports(tmp_path, entry):
    """MFM at transition 2 and in blocks 2-3 (efficient, default BC-40): 60 steps learn digits,
    eval.py rebuilds it from config.json, and the frozen graph gives the eval graph's logits."""
    model_dir, pb = str(tmp_path / 'mfm'), str(tmp_path / 'mfm.pb')
    out = entry('train.py', '--model_dir', model_dir, '--max_steps', '60', '--seed', '1',
                '--mfm_transitions', '2', '--mfm_layers', '2,3').stdout
    assert 'with MFM at transitions 2; layers 2,3' in out, out
    top1 = float(re.search(r'step 60: loss [\d.]+, top-1 ([\d.]+)%', out).group(1))
    assert top1 > 80.0, out
    evaluated = entry('eval.py', '--model_dir', model_dir).stdout
    assert 'top-1 %.2f%%' % top1 in evaluated, evaluated
    kernel = tf.train.load_variable(model_dir, 'densenet/denseblock3/denselayer1/conv2/kernel')
    assert kernel.shape == (3, 3, 24, 12)  # MFM halved the 4k = 48 bottleneck
    entry('export.py', '--model_dir', model_dir, '--output', pb)
    images = data.spec('digits').test_images[:16]
    expected = _eval_graph_logits(model_dir, images)
    assert np.max(np.abs(Predictor(pb).logits_of(images) - expected)) <= 1e-5


def test_serving_imports_nothing_of_training():
    """A fresh interpreter that loads the export and predict code holds none of the training
    loop's modules (optimizer, hooks, distribution, flags)."""
    code = ('import sys; import utils.export, utils.predict; '
            'print(" ".join(sorted(m for m in sys.modules if m.startswith("utils"))))')
    proc = subprocess.run([PYTHON, '-c', code], cwd=ROOT, stdout=subprocess.PIPE,
                          universal_newlines=True, check=True, env=child_environment())
    loaded = set(proc.stdout.split())
    assert {'utils.export', 'utils.predict', 'utils.inference', 'utils.checkpoints'} <= loaded
    assert not loaded & {'utils.run_loop', 'utils.optimizer', 'utils.hooks',
                         'utils.distribution', 'utils.flags', 'utils.evaluation',
                         'utils.estimator', 'utils.config'}, loaded
