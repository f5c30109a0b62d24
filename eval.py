"""Evaluate a checkpoint from --model_dir on the test split: loss, top-1 (and top-5) accuracy.

    python eval.py --model_dir runs/digits [--checkpoint PATH] [--json results.json]
    python eval.py --dataset imagenet --data_dir DIR --model densenet121 --init_from_keras H5

The model is the one --model_dir/config.json describes; flags given override it. Evaluation
never recomputes (there is no back-propagation), so there is no --efficient here.
"""
import contextlib
import json
import sys

from utils import cli  # the rest, TensorFlow included, inside: Ctrl-C there is one line


def parse_args(argv):
    from utils import flags
    return flags.eval_parser(__doc__.splitlines()[0]).parse_args(argv)


def run(args):
    from models import compat
    from utils import checkpoints, data, evaluation, files, resolve
    job = resolve.for_eval(args, compat.gpu_available())
    # Reserved now (refused before the whole evaluation), never over a file this run reads.
    output = files.Output(args.json, '--json', checkpoints.protected(
        args.model_dir, job.checkpoint, job.keras_weights)) if args.json else None
    with output or contextlib.suppress():
        dataset = data.for_model(job.model, job.data_dir)
        cli.LOG.debug('%s; layout %s', job.model, job.data_format)
        results = evaluation.evaluate(dataset, job.model, job.batch_size, job.data_format,
                                      job.checkpoint, job.keras_weights, job.fp16, why=job.why)
        cli.LOG.info('%s (step %d): %s', results['checkpoint'], results['global_step'],
                     evaluation.format_metrics(results))
        if output:
            output.commit(json.dumps(results, indent=2, sort_keys=True))


def main(argv=None):
    return cli.run_main(parse_args, run, argv)


if __name__ == '__main__':
    sys.exit(main())
