"""The tf.estimator model_fn: an Estimator trains digits with the efficient graph, evaluates as
eval.py does, and exports a SavedModel whose predictions equal export.py's frozen graph's; where
TensorFlow has no tf.estimator (2.16 on), importing it says so in one line."""
import dataclasses
import importlib
import os

import numpy as np
import pytest

from conftest import DIGITS_BC16
from models import compat
from models.compat import tf
from utils import data, evaluation, export
from utils.config import TrainConfig
from utils.predict import Predictor


@pytest.mark.skipif(compat.ESTIMATOR, reason='this TensorFlow has tf.estimator')
def test_without_tf_estimator_the_import_names_the_stacks_that_have_it():
    with pytest.raises(ImportError) as error:
        importlib.import_module('utils.estimator')
    assert str(error.value) == (
        'utils.estimator needs tf.estimator, which TensorFlow %s no longer has (removed in '
        '2.16): use TensorFlow 1.15 and 2.15 (the .venv and .venv-tf2 stacks), or train.py'
        % compat.VERSION)


@pytest.mark.slow
@pytest.mark.skipif(not compat.ESTIMATOR, reason='tf.estimator was removed in TensorFlow 2.16')
def test_an_estimator_trains_evaluates_and_exports(tmp_path):
    from utils import estimator
    # As in the README's example.
    digits = data.get_dataset('digits')
    model = dataclasses.replace(DIGITS_BC16, growth_rate=12)
    config = TrainConfig(model_dir=str(tmp_path / 'est'), batch_size=32, train_epochs=1,
                         epochs_per_eval=0, learning_rate=0.1, data_format='channels_last',
                         max_steps=80)
    classifier = tf.estimator.Estimator(
        estimator.model_fn, model_dir=config.model_dir, params=estimator.params(model, config),
        config=tf.estimator.RunConfig(tf_random_seed=1))
    classifier.train(lambda: digits.input_fn(True, config.batch_size, seed=1),
                     max_steps=config.max_steps)
    results = classifier.evaluate(lambda: digits.input_fn(False, 64))
    assert results['global_step'] == 80 and results['top1'] > 0.6, results
    export_dir = classifier.export_saved_model(str(tmp_path / 'export'),
                                               estimator.serving_input_receiver_fn(model))

    # The checkpoint is train.py's: the same variables, batch-norm statistics that moved,
    # and eval.py's evaluation of it gives the Estimator's accuracy.
    checkpoint = tf.train.latest_checkpoint(config.model_dir)
    names = dict(tf.train.list_variables(checkpoint))
    assert 'densenet/denseblock3/denselayer2/conv2/kernel/Momentum' in names
    moving = tf.train.load_variable(checkpoint,
                                    'densenet/denseblock1/denselayer1/norm1/moving_mean')
    assert np.all(np.isfinite(moving)) and np.any(moving != 0)
    ours = evaluation.evaluate(digits, model, 64, 'channels_last', checkpoint)
    assert ours['top1'] == pytest.approx(results['top1'], abs=1e-6)
    assert ours['loss'] == pytest.approx(results['cross_entropy'], rel=1e-5)

    # It trained the efficient graph: the forward convolutions recur under the gradients.
    graph = tf.GraphDef()
    graph_pbtxt = os.path.join(config.model_dir, 'graph.pbtxt')
    from google.protobuf import text_format
    with open(graph_pbtxt) as f:
        text_format.Merge(f.read(), graph)
    recomputed = [n for n in graph.node if n.op == 'Conv2D' and n.name.startswith('gradients')]
    assert len(recomputed) == 1 + 3 * 2 * 2 + 2

    images = digits.test_images[:32]
    pb = str(tmp_path / 'digits.pb')
    export.write_frozen(export.freeze(checkpoint, data.spec('digits'), model), pb)
    frozen = Predictor(pb)
    with tf.Graph().as_default(), tf.Session() as sess:
        meta = tf.saved_model.loader.load(sess, [tf.saved_model.SERVING], export_dir)
        signature = meta.signature_def['serving_default']
        assert sorted(signature.outputs) == ['classes', 'logits', 'probabilities']
        got = sess.run({k: v.name for k, v in signature.outputs.items()},
                       {signature.inputs['images'].name: images})
    np.testing.assert_allclose(got['logits'], frozen.logits_of(images), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got['classes'], np.argmax(frozen.logits_of(images), 1))
