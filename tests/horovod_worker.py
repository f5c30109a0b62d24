"""Run by test_train.py under horovodrun: trains a few steps, then writes this rank's weights."""
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import data, run_loop  # noqa: E402


class SaveWeights(tf.train.SessionRunHook):
    def __init__(self, path):
        self.path = path

    def end(self, session):
        variables = sorted(tf.trainable_variables(), key=lambda v: v.op.name)
        np.savez(self.path, **dict(zip([v.op.name for v in variables], session.run(variables))))


def main(out_dir):
    import horovod.tensorflow as hvd
    hvd.init()
    rank = hvd.rank()
    config = run_loop.RunConfig(
        model='densenet_bc', depth=16, growth_rate=4, efficient=True, fp16=False,
        dropout_rate=0.0, batch_size=16, model_dir=os.path.join(out_dir, 'rank%d' % rank),
        train_epochs=1, max_steps=6, epochs_per_eval=100, learning_rate=0.05, weight_decay=1e-4,
        momentum=0.9, save_checkpoint_steps=3, log_every_steps=3, seed=rank)
    run_loop.train(data.get_dataset('digits'), config,
                   extra_hooks=[SaveWeights(os.path.join(out_dir, 'weights%d.npz' % rank))])


if __name__ == '__main__':
    main(sys.argv[1])
