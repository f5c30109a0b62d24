"""Filling a graph's variables: from a checkpoint, or from a tf.keras DenseNet weights file
(.h5), each checked against the graph first (CheckpointError with a one-line reason)."""
from models.compat import tf
from models.keras_import import assign
from utils.checkpoints import check_compatible, rotated_away
from utils.errors import CheckpointError
from utils.log import LOG


def keras_weights_for(path, variables, new_classifier=False):
    """`models.keras_import.keras_values`, read and checked against `variables`, with a
    CheckpointError naming what does not fit (not a Keras DenseNet, another architecture)."""
    from models.keras_import import keras_values
    try:
        return keras_values(path, variables, new_classifier)
    except ValueError as e:
        raise CheckpointError(str(e))


def restorer(checkpoint=None, keras_weights=None, why=''):
    """fn(sess, variables) -> (checkpoint restored, its global step) filling a model's variables
    from a checkpoint, or else from a Keras DenseNet .h5 (then (None, 0)); either is checked
    against the graph first (CheckpointError if it does not fit; `why` as in
    `check_compatible`). A checkpoint that a training run's rotation deletes while it is read
    is replaced by the directory's newest, with a warning: eval.py and export.py may run
    beside a training run that saves often."""

    def restore(sess, variables):
        if not checkpoint:
            pairs, _ = keras_weights_for(keras_weights, variables)
            sess.run(tf.variables_initializer(variables))
            assign(sess, pairs)
            return None, 0
        path = checkpoint
        while True:
            try:
                check_compatible(path, variables, why)
                step = int(tf.train.load_variable(path, 'global_step'))
                tf.train.Saver(variables).restore(sess, path)
                return path, step
            except (tf.errors.OpError, CheckpointError, ValueError):
                newer = rotated_away(path)
                if not newer:
                    raise
                LOG.warning('warning: %s was deleted while being read (a training run rotating '
                            'its checkpoints?); using %s', path, newer)
                path = newer
    return restore


def keras_init_fn(path):
    """A Scaffold init_fn (it runs only when no checkpoint was restored) that loads a Keras
    DenseNet .h5; a classifier of another class count keeps its fresh initialisation. The file
    is read and checked against the graph here, before anything is written to --model_dir."""
    pairs, skipped = keras_weights_for(path, tf.global_variables(), new_classifier=True)

    def init_fn(scaffold, sess):
        assign(sess, pairs)
        LOG.info('initialised from %s%s', path, ' (new classifier: %s)' % ', '.join(
            '%s %s' % (v.op.name, v.shape.as_list()) for v in skipped) if skipped else '')
    return init_fn
