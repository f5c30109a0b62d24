"""Finding a checkpoint, checking that it fits a graph before restoring it (with a one-line
reason if not), and filling a graph's variables from it or from a Keras weights file."""
from models.compat import tf
from utils.errors import CheckpointError


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


def checkpoint_step(model_dir):
    """The global step of the latest checkpoint in `model_dir`, 0 if there is none."""
    checkpoint = tf.train.latest_checkpoint(model_dir) if model_dir else None
    return int(tf.train.load_variable(checkpoint, 'global_step')) if checkpoint else 0


def check_compatible(checkpoint, variables, why=''):
    """Raises CheckpointError naming the first variable missing from `checkpoint` or shaped
    differently there; `why`, if given, ends the message (e.g. how the flags changed the model)."""
    try:
        saved = dict(tf.train.list_variables(checkpoint))
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError('%s: unreadable checkpoint (%s)' % (
            checkpoint, str(e).splitlines()[0]))
    why = ' (%s)' % why if why else ''
    for var in variables:  # in build order: the first mismatch is the most telling
        name, shape = var.op.name, var.shape.as_list()
        if name not in saved:
            raise CheckpointError('%s was written by another architecture: it has no variable %s'
                                  ' %s%s' % (checkpoint, name, shape, why))
        if list(saved[name]) != shape:
            raise CheckpointError('%s was written by another architecture: %s is %s there, %s '
                                  'in this model%s' % (checkpoint, name, list(saved[name]), shape,
                                                       why))


def keras_weights_for(path, variables, new_classifier=False):
    """`models.keras_import.keras_values`, read and checked against `variables`, with a
    CheckpointError naming what does not fit (not a Keras DenseNet, another architecture)."""
    from models.keras_import import keras_values
    try:
        return keras_values(path, variables, new_classifier)
    except ValueError as e:
        raise CheckpointError(str(e))


def restorer(checkpoint=None, keras_weights=None, why=''):
    """fn(sess, variables) filling a model's variables from a checkpoint, or else from a Keras
    DenseNet .h5; either is checked against the graph first (CheckpointError if it does not
    fit; `why` as in `check_compatible`)."""
    from models.keras_import import assign

    def restore(sess, variables):
        if checkpoint:
            check_compatible(checkpoint, variables, why)
            tf.train.Saver(variables).restore(sess, checkpoint)
        else:
            pairs, _ = keras_weights_for(keras_weights, variables)
            sess.run(tf.variables_initializer(variables))
            assign(sess, pairs)
    return restore
