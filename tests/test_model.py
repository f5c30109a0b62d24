"""DenseNetCreator: architecture, configuration errors, and efficient == naive numerically."""
import importlib.util
import os
import subprocess

import numpy as np
import pytest

import models
from conftest import PYTHON, ROOT, child_environment, load_random_weights
from models import compat
from models import layers as L
from models.compat import tf

BATCH, SIZE, CLASSES = 4, 8, 10


def _images(seed=0, dtype=np.float32):
    return np.random.RandomState(seed).randn(BATCH, SIZE, SIZE, 3).astype(dtype)


def _labels():
    return np.arange(BATCH) % CLASSES


# -- architecture ------------------------------------------------------------------------------

# Published parameter counts (tf.keras.applications / torchvision for the ImageNet models).
PARAMS = [
    ('densenet121', {}, 1000, 7978856, 8062504),
    ('densenet169', {}, 1000, 14149480, 14307880),
    ('densenet201', {}, 1000, 20013928, 20242984),
    ('densenet_bc', dict(depth=100, growth_rate=12), 10, 769162, None),
    ('densenet_bc', dict(depth=250, growth_rate=24), 10, 15324406, None),
    ('densenet_bc', dict(depth=190, growth_rate=40), 10, 25624430, None),
]


@pytest.mark.parametrize('name,kwargs,classes,trainable,total', PARAMS)
def test_parameter_counts_match_the_published_ones(graph, name, kwargs, classes, trainable, total):
    # Counts depend on neither the input size nor the mode; inference builds a third fewer ops.
    size = 32 if name == 'densenet_bc' else 64
    img = tf.placeholder(tf.float32, [None, size, size, 3])
    logits = models.create(name, img, classes, data_format='channels_last', training=False,
                           **kwargs)()
    assert logits.shape.as_list() == [None, classes]
    assert models.count_params(tf.trainable_variables()) == trainable
    if total is not None:
        assert models.count_params(tf.global_variables()) == total


def test_the_papers_densenet264_k48_has_its_73m_parameters(graph):
    # Pleiss et al.'s ImageNet model (k=48, 2k initial filters): "73M parameters".
    img = tf.placeholder(tf.float32, [None, 64, 64, 3])
    model = models.densenet_imagenet(img, 1000, layers=264, growth_rate=48,
                                     data_format='channels_last', training=False)
    assert model.nb_layers == [6, 12, 64, 48]
    model()
    assert round(models.count_params(tf.trainable_variables()) / 1e6) == 73
    assert models.count_params(tf.trainable_variables()) == 72686632
    assert models.count_params(tf.global_variables()) == 73284424


def test_depth_rule_gives_paper_block_sizes(graph):
    img = tf.placeholder(tf.float32, [None, 32, 32, 3])
    assert models.densenet_bc(img, 10, depth=100).nb_layers == [16, 16, 16]
    assert models.DenseNetCreator(img, 10, depth=40).nb_layers == [12, 12, 12]
    assert models.densenet121(img).nb_layers == [6, 12, 24, 16]
    # Four blocks after the ImageNet stem need 29 pixels; three BC blocks need 4.
    with pytest.raises(ValueError, match=r'28x28 images are too small for 4 dense blocks after '
                                         r'the ImageNet stem.*at least 29x29'):
        models.densenet121(tf.placeholder(tf.float32, [None, 28, 28, 3]))
    with pytest.raises(ValueError, match=r'3x3 images are too small for 3 dense blocks: .*at '
                                         r'least 4x4'):
        models.densenet_bc(tf.placeholder(tf.float32, [None, 3, 3, 3]), 10, depth=40)
    models.densenet121(tf.placeholder(tf.float32, [None, 29, 29, 3]))


def test_scope_names_read_like_the_paper_and_do_not_depend_on_efficient():
    names = {}
    for efficient in (False, True):
        with tf.Graph().as_default():
            img = tf.placeholder(tf.float32, [BATCH, SIZE, SIZE, 3])
            model = models.densenet_bc(img, CLASSES, depth=16, growth_rate=4, efficient=efficient,
                                       data_format='channels_last', dropout_rate=0.2)
            tf.gradients(model(), tf.trainable_variables())
            names[efficient] = sorted(v.op.name for v in tf.global_variables())
    assert names[False] == names[True]
    for expected in ('densenet/stem/conv0/kernel',
                     'densenet/denseblock2/denselayer2/conv1/kernel',
                     'densenet/denseblock3/denselayer1/norm2/moving_variance',
                     'densenet/transition1/conv/kernel', 'densenet/transition2/norm/gamma',
                     'densenet/final/final_norm/beta', 'densenet/classifier/kernel'):
        assert expected in names[True]


def test_include_top_false_returns_pooled_features(graph):
    img = tf.placeholder(tf.float32, [None, SIZE, SIZE, 3])
    model = models.densenet_bc(img, CLASSES, depth=16, growth_rate=4, include_top=False,
                               data_format='channels_last')
    features = model()
    # 2k + 2*4 -> 16, /2 = 8, + 8 = 16, /2 = 8, + 8 = 16 channels after the last block
    assert features.shape.as_list() == [None, 16]
    assert not [v for v in tf.global_variables() if 'classifier' in v.op.name]


def test_imagenet_stem_shapes_match_keras(graph):
    img = tf.placeholder(tf.float32, [2, 224, 224, 3])
    model = models.densenet121(img, 1000, data_format='channels_last', include_top=False)
    model()
    pool = graph.get_tensor_by_name('densenet/stem/pool0/MaxPool:0')
    assert pool.shape.as_list() == [2, 56, 56, 64]


def test_legacy_get_model_returns_logits(graph):
    img = tf.placeholder(tf.float32, [None, 32, 32, 3])
    logits = models.densenet_121.get_model(img, 7, 'channels_last', True)
    assert logits.shape.as_list() == [None, 7]


def test_channels_first_builds_the_same_variables(graph):
    img = tf.placeholder(tf.float32, [None, 3, SIZE, SIZE])
    models.densenet_bc(img, CLASSES, depth=16, growth_rate=4, data_format='channels_first')()
    shapes = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    assert shapes['densenet/denseblock1/denselayer1/conv2/kernel'] == [3, 3, 16, 4]


# -- configuration errors --------------------------------------------------------------------

BAD_CONFIGS = [
    (dict(depth=41, bottleneck=True), r'depth=41 .*multiple of 6'),
    (dict(depth=42), r'depth=42 .*multiple of 3'),
    (dict(depth=3), r'depth=3 '),
    (dict(reduction=1.0), r'reduction must be in \[0, 1\)'),
    (dict(reduction=-0.1), r'reduction'),
    (dict(nb_layers_per_block=[2, 2]), r'lists 2 blocks but nb_dense_block is 3'),
    (dict(nb_layers_per_block=[2, 0, 2]), r'nb_layers_per_block must be an integer >= 1'),
    (dict(nb_layers_per_block=0), r'nb_layers_per_block must be an integer >= 1'),
    (dict(growth_rate=0), r'growth_rate must be an integer >= 1'),
    (dict(dropout_rate=1.0), r'dropout_rate must be in \[0, 1\)'),
    (dict(data_format='NHWC'), r'data_format must be one of'),
    (dict(efficient='yes'), r"efficient must be True, False, 'shared', 'every=N'"),
    (dict(efficient='every=0'), r"efficient must be True, False, 'shared', 'every=N'"),
    (dict(efficient='blocks=4'), r'block 4 is out of range \(1..3\)'),
    (dict(nb_filter=0), r'nb_filter must be an integer >= 1'),
]


@pytest.mark.parametrize('kwargs,message', BAD_CONFIGS)
def test_bad_configuration_raises_value_error(graph, kwargs, message):
    img = tf.placeholder(tf.float32, [None, SIZE, SIZE, 3])
    kwargs.setdefault('data_format', 'channels_last')
    with pytest.raises(ValueError, match=message):
        models.DenseNetCreator(img, CLASSES, **kwargs)


def test_bad_inputs_raise_value_error(graph):
    with pytest.raises(ValueError, match='4-D'):
        models.DenseNetCreator(tf.placeholder(tf.float32, [None, 8, 8]), 10)
    with pytest.raises(ValueError, match='floating point'):
        models.DenseNetCreator(tf.placeholder(tf.uint8, [None, 8, 8, 3]), 10,
                               data_format='channels_last')
    with pytest.raises(ValueError, match='unknown model'):
        models.create('resnet50', tf.placeholder(tf.float32, [None, 8, 8, 3]), 10)


def test_default_data_format_on_this_machine():
    expected = 'channels_first' if tf.test.is_gpu_available() else 'channels_last'
    assert L.default_data_format() == expected


# -- efficient == naive ------------------------------------------------------------------------

def _gradient_graph(efficient, dropout_rate=0.0, dtype=tf.float32, size=SIZE, **kwargs):
    """(model, loss, variables, gradients) in the default graph: a DenseNet-BC with 3 blocks of
    2 layers, k=4, unless `kwargs` say otherwise, on fixed images."""
    config = dict(bottleneck=True, depth=16, growth_rate=4, reduction=0.5)
    config.update(kwargs)
    img = tf.constant(np.random.RandomState(0).randn(BATCH, size, size, 3))
    model = models.DenseNetCreator(tf.cast(img, dtype), CLASSES, efficient=efficient,
                                   dropout_rate=dropout_rate, data_format='channels_last',
                                   **config)
    loss = tf.losses.sparse_softmax_cross_entropy(_labels(), model())
    variables = tf.trainable_variables()
    return model, loss, variables, tf.gradients(loss, variables)


def _loss_and_gradients(efficient, dropout_rate=0.0, dtype=tf.float32, size=SIZE, **kwargs):
    """Loss, gradients (by variable name) and moving statistics after one step of
    `_gradient_graph`'s network, fixed weights."""
    with tf.Graph().as_default():
        model, loss, variables, grads = _gradient_graph(efficient, dropout_rate, dtype, size,
                                                        **kwargs)
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        moving = [v for v in tf.global_variables() if 'moving' in v.op.name]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            load_random_weights(sess, tf.global_variables())
            feed = {model.dropout_seed: [7, 11]} if dropout_rate else {}
            before = sess.run(moving)
            loss_value, grad_values, _ = sess.run([loss, grads, updates], feed)
            after = sess.run(moving)
        names = [v.op.name for v in variables]
        return dict(loss=loss_value, grads=dict(zip(names, grad_values)), n_updates=len(updates),
                    moving_before={v.op.name: b for v, b in zip(moving, before)},
                    moving_after={v.op.name: a for v, a in zip(moving, after)})


def _relative_error(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12)


@pytest.mark.parametrize('dropout_rate', [0.0, 0.3])
def test_efficient_gives_the_same_loss_and_gradients(dropout_rate):
    naive = _loss_and_gradients(False, dropout_rate)
    efficient = _loss_and_gradients(True, dropout_rate)
    assert np.isfinite(naive['loss'])
    assert _relative_error(naive['loss'], efficient['loss']) < 1e-5
    assert sorted(naive['grads']) == sorted(efficient['grads'])
    for name, grad in naive['grads'].items():
        assert np.any(grad != 0), name
        assert _relative_error(grad, efficient['grads'][name]) < 1e-5, name
    # Moving statistics after the step are the same, i.e. updated once in both modes.
    for name, value in naive['moving_after'].items():
        np.testing.assert_allclose(value, efficient['moving_after'][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('setting, recomputed', [
    ('every=2', ['stem', 'denseblock1/denselayer2', 'transition1', 'denseblock2/denselayer2',
                 'transition2', 'denseblock3/denselayer2', 'final']),
    ('blocks=2,3', ['denseblock2/denselayer1', 'denseblock2/denselayer2', 'transition2',
                    'denseblock3/denselayer1', 'denseblock3/denselayer2', 'final']),
])
def test_partial_recomputation_wraps_what_it_says_and_keeps_the_gradients(setting, recomputed):
    with tf.Graph().as_default():
        model = models.densenet_bc(tf.constant(_images()), CLASSES, depth=16, growth_rate=4,
                                   efficient=setting, data_format='channels_last')
        model()
        assert model.recomputed == ['densenet/' + s for s in recomputed]
        assert str(model.plan) == setting
    naive, partial = _loss_and_gradients(False), _loss_and_gradients(setting)
    for name, grad in naive['grads'].items():
        assert _relative_error(grad, partial['grads'][name]) < 1e-5, name
    for name, value in naive['moving_after'].items():
        np.testing.assert_allclose(value, partial['moving_after'][name], rtol=1e-5, atol=1e-6)


SHARED_CASES = {
    'bottleneck': {},
    'plain': dict(bottleneck=False, depth=10, reduction=0.0),
    'dropout': dict(dropout_rate=0.3),
    'imagenet stem': dict(size=32, nb_dense_block=4, nb_layers_per_block=[2, 3, 2, 1],
                          nb_filter=8, subsample_initial_block=True),
    'mfm layers': dict(mfm_layers=[2, 3]),
}


@pytest.mark.parametrize('case', sorted(SHARED_CASES))
def test_shared_statistics_mode_equals_naive_in_float64(case):
    """Concat-free layers and shared batch statistics are exact identities: in float64 the
    loss, every gradient and every moving statistic agree to rounding."""
    naive = _loss_and_gradients(False, dtype=tf.float64, **SHARED_CASES[case])
    shared = _loss_and_gradients('shared', dtype=tf.float64, **SHARED_CASES[case])
    assert naive['loss'].dtype == np.float64 and np.isfinite(naive['loss'])
    assert _relative_error(naive['loss'], shared['loss']) < 1e-9
    assert sorted(naive['grads']) == sorted(shared['grads'])
    for name, grad in naive['grads'].items():
        assert grad.dtype == np.float64 and np.any(grad != 0), name
        assert _relative_error(grad, shared['grads'][name]) < 1e-9, name
    assert naive['n_updates'] == shared['n_updates']
    for name, value in naive['moving_after'].items():
        assert np.any(value != naive['moving_before'][name]), name
        assert _relative_error(value, shared['moving_after'][name]) < 1e-9, name


def test_shared_statistics_mode_agrees_with_naive_in_float32():
    naive, shared = _loss_and_gradients(False), _loss_and_gradients('shared')
    assert _relative_error(naive['loss'], shared['loss']) < 1e-5
    for name, grad in naive['grads'].items():  # summation order differs: float32 rounding
        assert _relative_error(grad, shared['grads'][name]) < 1e-3, name


def test_shared_statistics_mode_has_no_full_width_concatenation():
    """No feature maps concatenated wider than one chunk (4 layers' outputs, 4k channels),
    forward or backward, where efficient=True concatenates whole layer inputs (8 + 5k)."""
    def widest_concatenation(efficient):
        with tf.Graph().as_default() as graph:  # the graph is the answer: nothing to run
            _gradient_graph(efficient, depth=40)  # 3 blocks of 6 layers
            return max(int(op.outputs[0].shape[-1]) for op in graph.get_operations()
                       if op.type == 'ConcatV2' and op.outputs[0].shape.ndims == 4
                       and op.outputs[0].shape[0] == BATCH)  # not a kernel's gradient
    assert widest_concatenation('shared') == 4 * 4
    assert widest_concatenation(True) >= 8 + 5 * 4


def test_dropout_changes_the_loss_and_its_seed_replays_it():
    a = _loss_and_gradients(True, 0.3)
    b = _loss_and_gradients(True, 0.0)
    assert abs(a['loss'] - b['loss']) > 1e-4
    assert _relative_error(a['loss'], _loss_and_gradients(True, 0.3)['loss']) < 1e-6


def test_efficient_graph_really_recomputes_in_the_backward_pass():
    def forward_convs_under_gradients(efficient):
        with tf.Graph().as_default() as graph:
            _gradient_graph(efficient)
            return [op for op in graph.get_operations()
                    if op.type == 'Conv2D' and op.name.startswith('gradients')]
    assert not forward_convs_under_gradients(False)
    # 1 stem + 3 blocks x 2 layers x 2 convs + 2 transitions
    assert len(forward_convs_under_gradients(True)) == 1 + 12 + 2


@pytest.mark.parametrize('efficient', [False, True, 'shared'])
def test_moving_statistics_get_exactly_one_momentum_update(efficient):
    with tf.Graph().as_default():
        images = _images()
        model = models.densenet_bc(tf.constant(images), CLASSES, depth=16, growth_rate=4,
                                   efficient=efficient, data_format='channels_last')
        loss = tf.losses.sparse_softmax_cross_entropy(_labels(), model())
        train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
        # Collected after the gradients exist: recomputation must not have added any.
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        assert len(updates) == 2 * (1 + 3 * 2 * 2 + 2)
        assert updates == model.update_ops
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            kernel, = [v for v in tf.global_variables() if v.op.name == 'densenet/stem/conv0/kernel']
            conv0 = sess.run(tf.nn.conv2d(images, kernel, 1, 'SAME'))
            sess.run([train] + updates)
            scope = 'densenet/denseblock1/denselayer1/norm1/'
            mean, var = sess.run([v for v in tf.global_variables() if v.op.name in (
                scope + 'moving_mean', scope + 'moving_variance')])
    # First BN of the first layer normalises conv0's output: one update from (0, 1).
    batch_mean = conv0.mean(axis=(0, 1, 2))
    batch_var = conv0.var(axis=(0, 1, 2), ddof=1)
    momentum = L.BN_MOMENTUM
    np.testing.assert_allclose(mean, (1 - momentum) * batch_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(var, momentum + (1 - momentum) * batch_var, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('written_efficient, read_efficient', [
    (False, True), (True, False), ('shared', False), (False, 'shared'), ('shared', True)])
def test_checkpoints_restore_across_efficient_settings(tmp_path, written_efficient,
                                                       read_efficient):
    path = os.path.join(str(tmp_path), 'model.ckpt')
    logits = {}
    for efficient in (written_efficient, read_efficient):
        with tf.Graph().as_default():
            model = models.densenet_bc(tf.constant(_images()), CLASSES, depth=16, growth_rate=4,
                                       efficient=efficient, data_format='channels_last')
            out = model()
            loss = tf.losses.sparse_softmax_cross_entropy(_labels(), out)
            train = tf.train.MomentumOptimizer(0.1, 0.9).minimize(loss)
            saver = tf.train.Saver()
            with tf.Session() as sess:
                if efficient == written_efficient:
                    sess.run(tf.global_variables_initializer())
                    load_random_weights(sess, tf.global_variables(), seed=3)
                    sess.run([train] + model.update_ops)
                    logits['written'] = sess.run(out)
                    saver.save(sess, path)
                else:
                    saver.restore(sess, path)
                    logits['restored'] = sess.run(out)
    np.testing.assert_allclose(logits['written'], logits['restored'], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('efficient', [False, True, 'shared'])
def test_fp16_step_runs_with_float16_activations_and_float32_variables(efficient):
    with tf.Graph().as_default():
        img = tf.cast(tf.constant(_images()), tf.float16)
        model = models.densenet_bc(img, CLASSES, depth=16, growth_rate=4, efficient=efficient,
                                   dropout_rate=0.1, data_format='channels_last')
        logits = model()
        loss = tf.losses.sparse_softmax_cross_entropy(_labels(), logits)
        train = tf.group(tf.train.GradientDescentOptimizer(0.01).minimize(loss), *model.update_ops)
        assert logits.dtype == tf.float32
        assert all(v.dtype.base_dtype == tf.float32 for v in tf.global_variables())
        convs = [op.outputs[0] for op in tf.get_default_graph().get_operations()
                 if op.type == 'Conv2D' and op.name.startswith('densenet/denseblock1/')]
        assert convs and all(conv.dtype == tf.float16 for conv in convs)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            first = sess.run(loss)
            for _ in range(3):
                sess.run(train)
            assert np.isfinite(first) and np.isfinite(sess.run(loss))


# -- Max-Feature-Map -------------------------------------------------------------------------

def test_max_feature_map_is_the_max_of_the_two_channel_halves():
    x = np.random.RandomState(3).randn(2, 3, 3, 6).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        got = sess.run(L.max_feature_map(tf.constant(x), 'channels_last'))
        first = sess.run(L.max_feature_map(tf.constant(x.transpose(0, 3, 1, 2)),
                                           'channels_first'))
    np.testing.assert_array_equal(got, np.maximum(x[..., :3], x[..., 3:]))
    np.testing.assert_array_equal(first, got.transpose(0, 3, 1, 2))


def test_mfm_shapes_and_parameters_by_hand():
    """BC-16 k=4 (2 layers a block, 8 initial channels), MFM at transition 2 and in block 3.

    Block 1: 8 -> 16 channels; transition 1: 16 -> 8. Block 2: 8 -> 16; transition 2: BN(16), MFM
    -> 8, 1x1 conv -> 4 (not 8). Block 3 from 4 channels: layers see 4 and 8 channels, their 3x3
    convs read MFM(4k=16) = 8 channels instead of 16; out 12 -> final norm -> classifier.
    """
    def bn(c):
        return 2 * c

    def layer(c, mfm):
        return bn(c) + c * 16 + bn(16) + 9 * (8 if mfm else 16) * 4

    expected = (27 * 8 + layer(8, False) + layer(12, False) + bn(16) + 16 * 8 +
                layer(8, False) + layer(12, False) + bn(16) + 8 * 4 +
                layer(4, True) + layer(8, True) + bn(12) + 12 * CLASSES + CLASSES)
    with tf.Graph().as_default():
        model = models.densenet_bc(tf.constant(_images()), CLASSES, depth=16, growth_rate=4,
                                   data_format='channels_last', mfm_transitions=[2],
                                   mfm_layers=[3])
        logits = model()
        assert models.count_params(tf.trainable_variables()) == expected
        graph = tf.get_default_graph()
        transition2 = graph.get_tensor_by_name('densenet/transition2/pool/AvgPool:0')
        assert transition2.shape.as_list() == [BATCH, SIZE // 4, SIZE // 4, 4]
        assert logits.shape.as_list() == [BATCH, CLASSES]
        names = sorted(v.op.name for v in tf.global_variables())
    with tf.Graph().as_default():
        plain = models.densenet_bc(tf.constant(_images()), CLASSES, depth=16, growth_rate=4,
                                   data_format='channels_last')
        plain()
        assert names == sorted(v.op.name for v in tf.global_variables())  # same names, shapes differ
        assert models.count_params(tf.trainable_variables()) == (
            27 * 8 + layer(8, False) + layer(12, False) + bn(16) + 16 * 8 +
            layer(8, False) + layer(12, False) + bn(16) + 16 * 8 +
            layer(8, False) + layer(12, False) + bn(16) + 16 * CLASSES + CLASSES)


@pytest.mark.parametrize('kwargs, message', [
    (dict(mfm_transitions=[3]), r'mfm_transitions: block 3 is out of range \(1..2\)'),
    (dict(mfm_layers=[0]), r'mfm_layers: block 0 is out of range \(1..3\)'),
    (dict(mfm_layers=[1], bottleneck=False, depth=10), r'needs bottleneck=True'),
    (dict(mfm_transitions=[1], nb_filter=7, depth=10, bottleneck=True, growth_rate=4),
     r'MFM needs an even channel count, got 11 channels at densenet/transition1'),
    (dict(mfm_transitions=[1], efficient='shared'),
     r"efficient='shared' .* use efficient=True with mfm_transitions"),
])
def test_mfm_configuration_errors(kwargs, message):
    config = dict(depth=16, growth_rate=4, bottleneck=True, nb_dense_block=3,
                  data_format='channels_last')
    config.update(kwargs)
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=message):
            models.DenseNetCreator(tf.constant(_images()), CLASSES, **config)()


def test_mfm_efficient_gives_the_same_gradients_as_naive():
    def grads(efficient):
        with tf.Graph().as_default():
            model = models.densenet_bc(tf.constant(_images()), CLASSES, depth=16, growth_rate=4,
                                       efficient=efficient, data_format='channels_last',
                                       mfm_transitions=[1, 2], mfm_layers=[2, 3])
            loss = tf.losses.sparse_softmax_cross_entropy(_labels(), model())
            variables = tf.trainable_variables()
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                load_random_weights(sess, tf.global_variables())
                return dict(zip([v.op.name for v in variables],
                                sess.run(tf.gradients(loss, variables))))
    naive, efficient = grads(False), grads(True)
    for name, grad in naive.items():
        assert np.any(grad != 0), name
        assert _relative_error(grad, efficient[name]) < 1e-5, name


@pytest.mark.skipif(not compat.KERAS_3, reason='tf.keras is Keras 2 on this TensorFlow')
def test_keras_3_layers_touched_before_us_are_served_by_keras_2_after_import():
    """A library user who touched tf.compat.v1.layers before importing models met Keras 3's
    "not available" (TF_USE_LEGACY_KERAS was not set yet); after importing models the layers
    are tf-keras' and the network builds."""
    code = '\n'.join([
        'import sys', 'sys.path.insert(0, %r)' % ROOT, 'import tensorflow',
        'try:', '    tensorflow.compat.v1.layers.dense', 'except AttributeError as e:',
        '    print("before:", e)', 'import models', 'from models.compat import tf',
        'images = tf.placeholder(tf.float32, [None, 8, 8, 3])',
        'print("after:", models.densenet_bc(images, 10, depth=16, growth_rate=4,',
        '                                   data_format="channels_last")().shape)'])
    proc = subprocess.run([PYTHON, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=child_environment())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'before: `dense` is not available with Keras 3.' in proc.stdout, proc.stdout
    assert 'after: (?, 10)' in proc.stdout, proc.stdout
    # Keras 3 asked for on purpose: the commands say what to do in one line.
    proc = subprocess.run([PYTHON, os.path.join(ROOT, 'train.py'), '--help'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=dict(child_environment(), TF_USE_LEGACY_KERAS='0'))
    assert proc.returncode == 1 and proc.stderr == (
        'error: TensorFlow %s serves tf.compat.v1.layers from Keras 3 here '
        '(TF_USE_LEGACY_KERAS=0): unset it or set it to 1\n' % compat.VERSION), proc.stderr


@pytest.mark.skipif(not compat.TF2 or importlib.util.find_spec('tf_keras') is not None,
                    reason='TF 1.15 ignores TF_USE_LEGACY_KERAS; tf-keras is installed here')
def test_legacy_keras_asked_for_without_tf_keras_is_one_line(tmp_path):
    """TF_USE_LEGACY_KERAS=1 in the user's environment on a TensorFlow 2 without tf-keras: the
    commands say what to do in one line, before anything is written."""
    env = dict(child_environment(), TF_USE_LEGACY_KERAS='1')
    proc = subprocess.run([PYTHON, os.path.join(ROOT, 'train.py'), '--model_dir',
                           str(tmp_path / 'run')], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=env)
    assert proc.returncode == 1 and proc.stderr == (
        'error: TF_USE_LEGACY_KERAS is set, and TensorFlow %s then needs the tf-keras package: '
        'pip install tf-keras==%s --no-deps (see requirements-tf221-keras.txt), or unset it\n'
        % (compat.VERSION, compat.VERSION)), proc.stderr
    assert not (tmp_path / 'run').exists()
