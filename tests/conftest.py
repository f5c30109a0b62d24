import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)


@pytest.fixture
def graph():
    """A fresh default graph for one test."""
    g = tf.Graph()
    with g.as_default():
        yield g


def load_random_weights(sess, variables, seed=0, scale=0.1):
    """Gives every variable the same pseudo-random values whichever graph it lives in."""
    rng = np.random.RandomState(seed)
    for var in sorted(variables, key=lambda v: v.op.name):
        value = rng.randn(*var.shape.as_list()).astype(np.float32) * scale
        if 'moving_variance' in var.op.name or var.op.name.endswith('gamma'):
            value = 1.0 + np.abs(value)
        var.load(value, sess)
