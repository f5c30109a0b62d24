"""Inference graphs from checkpoints: a frozen GraphDef and a SavedModel of it, built with the
same `utils.inference` as training (training=False: no recomputation, no dropout). Imports
nothing of training."""
import os

from tensorflow.python.framework import meta_graph

from models.compat import tf
from models.layers import CHANNELS_LAST
from utils.restore import restorer
from utils.errors import UsageError
from utils.inference import inference

INPUT, LOGITS, PROBABILITIES = 'input', 'logits', 'probabilities'


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
        with tf.Session() as sess:
            restorer(checkpoint, keras_weights)(sess, tf.global_variables())
            frozen = tf.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), [LOGITS, PROBABILITIES])
    meta = tf.MetaGraphDef()
    meta.graph_def.CopyFrom(tf.graph_util.extract_sub_graph(frozen, [LOGITS, PROBABILITIES]))
    meta_graph.strip_graph_default_valued_attrs(meta)
    return meta.graph_def


def write_frozen(graph_def, path):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError('%s: the output directory does not exist' % directory)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(graph_def.SerializeToString())
    os.replace(tmp, path)
    return os.path.getsize(path)


def write_saved_model(graph_def, export_dir):
    """A SavedModel of the frozen `graph_def` (from `freeze`) whose serving_default maps images
    to logits, probabilities and classes. Made of constants like the frozen graph, it holds no
    variables: TF 2 writes variable ops with attributes TF 1.15 cannot read."""
    if os.path.exists(export_dir):
        raise UsageError('%s already exists; SavedModel export needs a new directory'
                         % export_dir)
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
    return export_dir
