"""Peak training memory and step time of DenseNet-BC, naive vs efficient, measured in one run.

    python -m benchmarks.memory --depths 100 --batch_size 64

Peak memory is replayed from a traced step's allocation records (utils.memory): what the step
allocates on top of the variables. Step time is the median over --steps untraced steps.
"""
import argparse
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from utils import memory  # noqa: E402


def measure(depth, efficient, batch_size, growth_rate=12, image_size=32, steps=5):
    """(trainable parameters, peak bytes, median seconds per step) of one SGD step."""
    with tf.Graph().as_default():
        rng = np.random.RandomState(0)
        images = tf.constant(rng.rand(batch_size, image_size, image_size, 3).astype(np.float32))
        labels = tf.constant(rng.randint(0, 10, batch_size).astype(np.int32))
        model = models.densenet_bc(images, 10, depth=depth, growth_rate=growth_rate,
                                   efficient=efficient, data_format='channels_last')
        loss = tf.losses.sparse_softmax_cross_entropy(labels, model())
        with tf.control_dependencies(model.update_ops):
            train = tf.train.MomentumOptimizer(0.1, 0.9, use_nesterov=True).minimize(loss)
        params = models.count_params(tf.trainable_variables())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(train)  # warm-up: one-off allocations and autotuning
            peak = memory.peak_bytes(sess, train)
            times = []
            for _ in range(steps):
                start = time.time()
                sess.run(train)
                times.append(time.time() - start)
    return params, peak, float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--depths', type=int, nargs='+', default=[100])
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--growth_rate', type=int, default=12)
    parser.add_argument('--image_size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=5)
    args = parser.parse_args(argv)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    print('DenseNet-BC k=%d, batch %d, %dx%d, one SGD step on %s' % (
        args.growth_rate, args.batch_size, args.image_size, args.image_size,
        'GPU' if tf.test.is_gpu_available() else 'CPU'))
    header = ('depth', 'params', 'naive MiB', 'efficient MiB', 'ratio', 'naive s/step',
              'efficient s/step', 'overhead')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for depth in args.depths:
        params, naive_peak, naive_time = measure(depth, False, args.batch_size,
                                                 args.growth_rate, args.image_size, args.steps)
        _, eff_peak, eff_time = measure(depth, True, args.batch_size, args.growth_rate,
                                        args.image_size, args.steps)
        print('| %d | %s | %.1f | %.1f | %.1f%% | %.3f | %.3f | %+.1f%% |' % (
            depth, format(params, ','), naive_peak / 2. ** 20, eff_peak / 2. ** 20,
            100.0 * eff_peak / naive_peak, naive_time, eff_time,
            100.0 * (eff_time / naive_time - 1)), flush=True)


if __name__ == '__main__':
    main()
