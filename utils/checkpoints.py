"""Checking that a checkpoint fits a graph before restoring it, with a one-line reason if not."""
import tensorflow as tf


class CheckpointError(Exception):
    """No checkpoint, an unreadable one, or one of another architecture."""


def find_checkpoint(model_dir, checkpoint=None):
    """The given checkpoint path, else the latest in `model_dir`; CheckpointError if none."""
    if checkpoint:
        if not tf.train.checkpoint_exists(checkpoint):
            raise CheckpointError('%s: no such checkpoint' % checkpoint)
        return checkpoint
    latest = tf.train.latest_checkpoint(model_dir) if model_dir else None
    if not latest:
        raise CheckpointError('%s: no checkpoint found (train first, or pass --checkpoint)'
                              % model_dir)
    return latest


def check_compatible(checkpoint, variables):
    """Raises CheckpointError naming the first variable missing from `checkpoint` or shaped
    differently there."""
    try:
        saved = dict(tf.train.list_variables(checkpoint))
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError('%s: unreadable checkpoint (%s)' % (
            checkpoint, str(e).splitlines()[0]))
    for var in variables:  # in build order: the first mismatch is the most telling
        name, shape = var.op.name, var.shape.as_list()
        if name not in saved:
            raise CheckpointError('%s was written by another architecture: it has no variable %s'
                                  ' %s' % (checkpoint, name, shape))
        if list(saved[name]) != shape:
            raise CheckpointError('%s was written by another architecture: %s is %s there, %s '
                                  'in this model' % (checkpoint, name, list(saved[name]), shape))
