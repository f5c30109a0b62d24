"""tf.keras.applications DenseNet-121 weights (.h5, random, no download) load into ours."""
import numpy as np
import pytest
import tensorflow as tf

import models
from models.keras_import import load_keras_weights


@pytest.mark.slow
def test_keras_densenet121_weights_give_the_same_logits(tmp_path):
    path = str(tmp_path / 'densenet121.h5')
    rng = np.random.RandomState(0)
    images = rng.randn(2, 32, 32, 3).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.keras.backend.set_session(sess)
        keras = tf.keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3))
        values = []
        for w in keras.weights:
            shape = w.shape.as_list()
            if 'moving_variance' in w.name or 'gamma' in w.name:
                values.append(1.0 + 0.2 * rng.rand(*shape))
            else:
                values.append(0.05 * rng.randn(*shape))
        keras.set_weights(values)
        keras.save_weights(path)
        features = tf.keras.Model(keras.input, keras.get_layer('avg_pool').output)
        kernel, bias = keras.get_layer('fc1000').get_weights()
        expected = features.predict(images).dot(kernel) + bias
    with tf.Graph().as_default():
        logits = models.densenet121(tf.constant(images), 1000, data_format='channels_last',
                                    training=False)()
        with tf.Session() as sess:
            load_keras_weights(sess, path, tf.global_variables())
            got = sess.run(logits)
    assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) <= 1e-4


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
