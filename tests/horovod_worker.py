"""Run by test_train.py under horovodrun: trains a few steps, then writes this rank's weights.

    horovod_worker.py OUT_DIR [fp16]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.compat import tf  # noqa: E402
from utils import cli, data, distribution, run_loop  # noqa: E402
from conftest import DIGITS_BC16  # noqa: E402  (this script's directory is on sys.path)
from utils.config import TrainConfig  # noqa: E402


class SaveWeights(tf.train.SessionRunHook):
    def __init__(self, path):
        self.path = path

    def end(self, session):
        variables = sorted(tf.trainable_variables(), key=lambda v: v.op.name)
        np.savez(self.path, **dict(zip([v.op.name for v in variables], session.run(variables))))


def main(out_dir, fp16):
    cli.setup_logging()
    rank = distribution.current().rank
    config = TrainConfig(
        model_dir=os.path.join(out_dir, 'rank%d' % rank), batch_size=16, train_epochs=1,
        epochs_per_eval=100, learning_rate=0.05, data_format='channels_last', fp16=fp16,
        max_steps=6, save_checkpoint_steps=3, log_every_steps=3, seed=rank)
    run_loop.train(data.get_dataset('digits'), DIGITS_BC16, config,
                   extra_hooks=[SaveWeights(os.path.join(out_dir, 'weights%d.npz' % rank))])


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2:] == ['fp16'])
