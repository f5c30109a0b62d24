"""Evaluation on a dataset's test split: the metrics graph, the pass over the split, and
eval.py's whole evaluation of a checkpoint (or of Keras weights)."""
import collections

from models.compat import tf
from utils.restore import restorer
from utils.inference import inference


def metrics(images, labels, dataset, model, data_format, fp16=False):
    """{name: summed tensor} over one batch of the inference graph: loss, top-1 (top-5 with
    more than 10 classes) and the number of examples."""
    logits, _ = inference(images, dataset, model, False, data_format, fp16)
    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                         logits=logits))
    totals = dict(loss=loss, top1=_top_k_correct(logits, labels, 1), examples=tf.size(labels))
    if model.num_classes > 10:
        totals['top5'] = _top_k_correct(logits, labels, 5)
    return totals


def _top_k_correct(logits, labels, k):
    return tf.reduce_sum(tf.cast(tf.nn.in_top_k(logits, labels, k), tf.float32))


def run(sess, iterator, totals):
    """Means of `totals` (from `metrics`) over one pass of `iterator`, and 'examples'."""
    sess.run(iterator.initializer)
    sums = collections.Counter()
    while True:
        try:
            for k, v in sess.run(totals).items():
                sums[k] += float(v)
        except tf.errors.OutOfRangeError:
            break
    n = max(sums['examples'], 1)
    results = dict((k, sums[k] / n) for k in totals if k != 'examples')
    results['examples'] = int(sums['examples'])
    return results


def format_metrics(results):
    parts = ['loss %.4f' % results['loss'], 'top-1 %.2f%%' % (100 * results['top1'])]
    if 'top5' in results:
        parts.append('top-5 %.2f%%' % (100 * results['top5']))
    return ', '.join(parts) + ' on %d test images' % results['examples']


def evaluate(dataset, model, batch_size, data_format, checkpoint=None, keras_weights=None,
             fp16=False, why=''):
    """Evaluates the whole test split with `checkpoint`'s weights (or, without one, those of
    the Keras file `keras_weights`); `why` explains a checkpoint that does not fit."""
    with tf.Graph().as_default():
        iterator = tf.data.make_initializable_iterator(dataset.input_fn(False, batch_size))
        images, labels = iterator.get_next()
        totals = metrics(images, labels, dataset, model, data_format, fp16)
        with tf.Session() as sess:
            restored, step = restorer(checkpoint, keras_weights, why)(sess, tf.global_variables())
            results = run(sess, iterator, totals)
    results['checkpoint'] = restored or keras_weights
    results['global_step'] = step
    return results
