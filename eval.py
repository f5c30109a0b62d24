"""Evaluate a checkpoint from --model_dir on the test split: loss, top-1 (and top-5) accuracy.

    python eval.py --model_dir runs/digits [--checkpoint PATH] [--json results.json]
    python eval.py --dataset imagenet --data_dir DIR --model densenet121 --init_from_keras H5

The model is the one --model_dir/config.json describes; flags given override it. Evaluation
never recomputes (there is no back-propagation), so there is no --efficient here.
"""
import json
import os
import sys

from utils import cli  # the rest, TensorFlow included, inside: Ctrl-C there is one line


def parse_args(argv):
    from utils import flags
    return flags.eval_parser(__doc__.splitlines()[0]).parse_args(argv)


def run(args):
    from models import compat
    from utils import data, evaluation, resolve
    from utils.errors import UsageError
    if args.json:  # refused now, not after the whole evaluation
        directory = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json) or not os.access(directory, os.W_OK | os.X_OK):
            raise UsageError('--json %s: %s' % (args.json, 'a directory' if os.path.isdir(
                args.json) else 'cannot write in %s' % directory))
    job = resolve.for_eval(args, compat.gpu_available())
    dataset = data.for_model(job.model, job.data_dir)
    cli.LOG.debug('%s; layout %s', job.model, job.data_format)
    results = evaluation.evaluate(dataset, job.model, job.batch_size, job.data_format,
                                  job.checkpoint, job.keras_weights, job.fp16, why=job.why)
    cli.LOG.info('%s (step %d): %s', results['checkpoint'], results['global_step'],
                 evaluation.format_metrics(results))
    if args.json:
        try:
            with open(args.json, 'w') as f:
                json.dump(results, f, indent=2, sort_keys=True)
        except OSError as e:
            raise UsageError('--json %s: %s' % (args.json, e.strerror or e))


def main(argv=None):
    return cli.run_main(parse_args, run, argv)


if __name__ == '__main__':
    sys.exit(main())
