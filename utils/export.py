"""Inference graphs from checkpoints: a frozen GraphDef and a SavedModel, built with the same
`run_loop.inference` as training (training=False: no recomputation, no dropout)."""
import os

import tensorflow as tf

from utils.run_loop import inference, restorer

INPUT, LOGITS, PROBABILITIES = 'input', 'logits', 'probabilities'


def _inference_graph(spec, config):
    """(graph, input placeholder, logits, probabilities): raw NHWC float32 pixels in."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, (None,) + tuple(spec.image_shape), name=INPUT)
        logits, _ = inference(images, spec, config._replace(efficient=False, dropout_rate=0.0),
                              training=False)
        logits = tf.identity(logits, name=LOGITS)
        probabilities = tf.nn.softmax(logits, name=PROBABILITIES)
    return graph, images, logits, probabilities


def freeze(checkpoint, spec, config):
    """A GraphDef with the checkpoint's weights (or, with checkpoint None, those of the Keras file
    `config.init_from_keras`) folded into constants."""
    graph, _, _, _ = _inference_graph(spec, config)
    with graph.as_default():
        with tf.Session() as sess:
            restorer(checkpoint, config.init_from_keras)(sess, tf.global_variables())
            frozen = tf.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), [LOGITS, PROBABILITIES])
    return tf.graph_util.extract_sub_graph(frozen, [LOGITS, PROBABILITIES])


def write_frozen(graph_def, path):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OSError('%s: the output directory does not exist' % directory)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(graph_def.SerializeToString())
    os.replace(tmp, path)
    return os.path.getsize(path)


def write_saved_model(checkpoint, spec, config, export_dir):
    """A SavedModel (weights as in `freeze`) whose serving_default maps images to logits, probabilities and classes."""
    if os.path.exists(export_dir):
        raise OSError('%s already exists; SavedModel export needs a new directory' % export_dir)
    graph, images, logits, probabilities = _inference_graph(spec, config)
    with graph.as_default():
        classes = tf.argmax(logits, 1, name='classes')
        signature = tf.saved_model.predict_signature_def(
            inputs={'images': images},
            outputs={'logits': logits, 'probabilities': probabilities, 'classes': classes})
        with tf.Session() as sess:
            restorer(checkpoint, config.init_from_keras)(sess, tf.global_variables())
            builder = tf.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                sess, [tf.saved_model.SERVING],
                signature_def_map={'serving_default': signature}, strip_default_attrs=True)
            builder.save()
    return export_dir
