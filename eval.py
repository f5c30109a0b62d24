"""Evaluate a checkpoint from --model_dir on the test split: loss, top-1 (and top-5) accuracy.

    python eval.py --model_dir runs/digits [--checkpoint PATH] [--json results.json]
    python eval.py --dataset imagenet --data_dir DIR --model densenet121 --init_from_keras H5

The model is the one --model_dir/config.json describes; flags given override it. Evaluation
never recomputes (there is no back-propagation), so there is no --efficient here.
"""
import json
import sys

from utils import cli  # the rest, TensorFlow included, inside: Ctrl-C there is one line


def parse_args(argv):
    from utils import flags
    parser = flags.ArgumentParser(prog='eval.py', description=__doc__.splitlines()[0])
    flags.add_model_flags(parser)
    parser.add_argument('--checkpoint', default=None, help='default: the latest in --model_dir')
    parser.add_argument('--json', default=None, help='also write the results to this file')
    flags.add_keras_flag(parser, 'evaluate instead of a checkpoint')
    return parser.parse_args(argv)


def run(args):
    from models import compat
    from utils import data, evaluation, flags
    from utils.checkpoints import find_checkpoint
    from utils.config import CONFIG_FILE, ModelConfig
    from utils.errors import UsageError
    checkpoint = None if args.init_from_keras else find_checkpoint(args.model_dir,
                                                                   args.checkpoint)
    saved = ModelConfig.load(args.model_dir)
    model = flags.resolve_model(args, saved)
    if args.init_from_keras:
        flags.check_keras_source(args.init_from_keras, model.model)
    # The device evaluating picks the layout (a GPU run's NCHW does not run on a CPU).
    layout = flags.data_format(args.data_format, compat.gpu_available())
    dataset = data.for_model(model, args.data_dir)
    cli.LOG.debug('%s; layout %s', model, layout)
    changed = saved.difference(model) if saved else ''
    results = evaluation.evaluate(
        dataset, model, args.batch_size or dataset.defaults.batch_size, layout, checkpoint,
        args.init_from_keras, args.fp16,
        why='the flags change %s: %s' % (CONFIG_FILE, changed) if changed else '')
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
