"""Inference graphs from checkpoints: a frozen GraphDef and a SavedModel of it, built with the
same `utils.inference` as training (training=False: no recomputation, no dropout). Imports
nothing of training."""
import os

from tensorflow.python.framework import meta_graph

from models.compat import tf
from models.layers import CHANNELS_LAST
from utils import files
from utils.restore import restorer
from utils.errors import UsageError
from utils.inference import inference

# The graph's input and outputs, and the range of its raw pixels ([0, dataset's pixel_max]: the
# digits' 0-16, else 0-255), a constant that `utils.predict` maps 8-bit images into.
INPUT, LOGITS, PROBABILITIES, PIXEL_RANGE = 'input', 'logits', 'probabilities', 'pixel_range'
OUTPUTS = (LOGITS, PROBABILITIES, PIXEL_RANGE)


def reserve(output, saved_model, protected=None):
    """(files.Output or None, files.OutputDirectory or None) for --output and --saved_model,
    checked and created before anything is frozen: UsageError if either cannot be written,
    if both name one path, or if one would land on a file `protected` (a files.Protected,
    e.g. `checkpoints.protected`) says export.py only reads."""
    if output and saved_model and os.path.realpath(output) == os.path.realpath(saved_model):
        raise UsageError('--output and --saved_model are both %s: give each its own path' %
                         output)
    frozen = files.Output(output, '--output', protected) if output else None
    try:
        saved = (files.OutputDirectory(saved_model, '--saved_model', protected)
                 if saved_model else None)
    except BaseException:
        if frozen:
            frozen.discard()
        raise
    return frozen, saved


def freeze(checkpoint, spec, model, keras_weights=None):
    """A GraphDef of `model` (a ModelConfig) for `spec`'s inputs with the checkpoint's weights
    (or, with checkpoint None, those of the Keras file `keras_weights`) folded into constants.

    Attributes at their default values are left out (as SavedModels do), so that the graph
    loads in older TensorFlow versions too: TF 2's FusedBatchNormV3 has an attribute TF 1.15
    does not know, at its default here.
    """
    with tf.Graph().as_default() as graph:
        # Raw NHWC float32 pixels in, computed in float32 and NHWC (what runs on any device).
        images = tf.placeholder(tf.float32, (None,) + tuple(spec.image_shape), name=INPUT)
        logits, _ = inference(images, spec, model, False, CHANNELS_LAST)
        tf.nn.softmax(tf.identity(logits, name=LOGITS), name=PROBABILITIES)
        tf.constant([0.0, float(spec.pixel_max)], name=PIXEL_RANGE)
        with tf.Session() as sess:
            restorer(checkpoint, keras_weights)(sess, tf.global_variables())
            frozen = tf.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), list(OUTPUTS))
    meta = tf.MetaGraphDef()
    meta.graph_def.CopyFrom(tf.graph_util.extract_sub_graph(frozen, list(OUTPUTS)))
    meta_graph.strip_graph_default_valued_attrs(meta)
    return meta.graph_def


def write_frozen(graph_def, output):
    """Writes `graph_def` to `output` (a files.Output, or a path); returns its size."""
    if not isinstance(output, files.Output):
        with files.Output(output, 'frozen graph') as reserved:
            return write_frozen(graph_def, reserved)
    return output.commit(graph_def.SerializeToString())


def write_saved_model(graph_def, output):
    """A SavedModel of the frozen `graph_def` (from `freeze`) in `output` (a
    files.OutputDirectory, or a path), whose serving_default maps images to logits,
    probabilities and classes. Made of constants like the frozen graph, it holds no variables:
    TF 2 writes variable ops with attributes TF 1.15 cannot read. Written beside its place
    and renamed into it when whole (OutputError, nothing left, on a full disk)."""
    if not isinstance(output, files.OutputDirectory):
        with files.OutputDirectory(output, 'SavedModel') as reserved:
            return write_saved_model(graph_def, reserved)
    try:
        _saved_model(graph_def, output.tmp)
    except (OSError, tf.errors.OpError) as e:
        raise output.failed(e)
    output.commit()
    return output.path


def _saved_model(graph_def, export_dir):
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name='')
        images = graph.get_tensor_by_name(INPUT + ':0')
        logits = graph.get_tensor_by_name(LOGITS + ':0')
        outputs = {'logits': logits, 'classes': tf.argmax(logits, 1, name='classes'),
                   'probabilities': graph.get_tensor_by_name(PROBABILITIES + ':0')}
        signature = tf.saved_model.predict_signature_def({'images': images}, outputs)
        with tf.Session() as sess:
            builder = tf.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                sess, [tf.saved_model.SERVING],
                signature_def_map={'serving_default': signature}, strip_default_attrs=True)
            builder.save()
