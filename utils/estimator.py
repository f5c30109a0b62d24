"""A `tf.estimator` model_fn, for pipelines built on Estimators.

    estimator = tf.estimator.Estimator(model_fn, model_dir, params=params(model, config))

TRAIN builds the graph train.py trains (`utils.optimizer.training_graph`: the same inference
builder, recomputation, batch-norm updates, optimizer, schedule and loss scaling); EVAL reports
what eval.py does (cross entropy, top-1, top-5 with more than 10 classes, per example) on the
inference graph; PREDICT and the SavedModel
from `serving_input_receiver_fn` map raw pixels to logits, probabilities and classes, as
export.py's graphs do. Under horovodrun the adapter of `utils.distribution` averages gradients
and broadcasts rank 0's variables (give the other ranks no model_dir).
"""
from models import compat
from models.compat import tf
from utils import data, distribution
from utils.inference import inference
from utils.optimizer import training_graph

if not compat.ESTIMATOR:
    raise ImportError('utils.estimator needs tf.estimator, which TensorFlow %s no longer has '
                      '(removed in 2.16): use %s, or train.py' % (compat.VERSION,
                                                                  compat.ESTIMATOR_STACKS))

IMAGES = 'images'


def params(model, config):
    """The Estimator's `params`: a ModelConfig and a TrainConfig (both in utils.config)."""
    return {'model': model, 'train': config}


def model_fn(features, labels, mode, params):
    """Features: raw NHWC float32 pixels, or a dict holding them under 'images'."""
    model, config = params['model'], params['train']
    images = features[IMAGES] if isinstance(features, dict) else features
    spec = data.spec(model.dataset, model.image_size)
    if mode == tf.estimator.ModeKeys.TRAIN:
        dist = distribution.current()
        last_step = config.total_steps(spec.train_size, dist.size)
        graph = training_graph(images, labels, spec, model, config, last_step, dist)
        return tf.estimator.EstimatorSpec(mode, loss=graph.loss, train_op=graph.train_op,
                                          training_hooks=dist.hooks())
    logits, _ = inference(images, spec, model, False, config.data_format, config.fp16)
    classes = tf.argmax(logits, 1, output_type=tf.int32)
    if mode == tf.estimator.ModeKeys.PREDICT:
        predictions = {'logits': logits, 'probabilities': tf.nn.softmax(logits),
                       'classes': classes}
        return tf.estimator.EstimatorSpec(mode, predictions=predictions, export_outputs={
            'serving_default': tf.estimator.export.PredictOutput(predictions)})
    # Per example, as eval.py reports them ('loss' is the Estimator's mean of batch means).
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    metrics = {'top1': tf.metrics.accuracy(labels, classes),
               'cross_entropy': tf.metrics.mean(cross_entropy)}
    if model.num_classes > 10:
        metrics['top5'] = tf.metrics.mean(tf.nn.in_top_k(logits, labels, 5))
    return tf.estimator.EstimatorSpec(mode, loss=tf.reduce_mean(cross_entropy),
                                      eval_metric_ops=metrics)


def serving_input_receiver_fn(model):
    """For `Estimator.export_saved_model`: a float32 [None, H, W, C] placeholder of raw pixels
    named 'images', the input of the SavedModel's serving_default signature."""
    shape = data.spec(model.dataset, model.image_size).image_shape

    def receiver():
        images = tf.placeholder(tf.float32, (None,) + tuple(shape), name=IMAGES)
        return tf.estimator.export.ServingInputReceiver({IMAGES: images}, {IMAGES: images})
    return receiver
