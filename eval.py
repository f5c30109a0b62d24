"""Evaluate a checkpoint from --model_dir on the test split: loss, top-1 (and top-5) accuracy.

    python eval.py --model_dir runs/digits [--checkpoint PATH] [--json results.json]
    python eval.py --dataset imagenet --data_dir DIR --model densenet121 --init_from_keras H5
"""
import json

from utils.cli import run_main


def parse_args(argv):
    from utils import flags
    parser = flags.ArgumentParser(description=__doc__.splitlines()[0])
    flags.add_model_flags(parser)
    # Architecture flags default to what train.py saved in --model_dir/config.json.
    parser.set_defaults(dataset=None, efficient=False)
    parser.add_argument('--checkpoint', default=None, help='default: the latest in --model_dir')
    parser.add_argument('--json', default=None, help='also write the results to this file')
    flags.add_keras_flag(parser, 'evaluate instead of a checkpoint')
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    from utils import data, flags, run_loop
    from utils.checkpoints import find_checkpoint
    checkpoint = None if args.init_from_keras else find_checkpoint(args.model_dir,
                                                                   args.checkpoint)
    saved = flags.load_config(args.model_dir) or {}
    # data_format is not copied: the device evaluating picks it (a GPU run's NCHW fails on CPU)
    for key in ('model', 'depth', 'growth_rate', 'image_size', 'batch_size',
                'mfm_transitions', 'mfm_layers'):
        if getattr(args, key) is None and saved.get(key) is not None:
            setattr(args, key, saved[key])
    saved_name, saved_like = flags.saved_dataset(saved)
    if args.dataset is None:
        args.dataset = saved_name
    if args.dataset == 'synthetic' and saved_like:
        args.synthetic_like = saved_like
    dataset = data.get_dataset(args.dataset, args.data_dir, args.image_size, args.synthetic_like)
    flags.resolve_model_flags(args, dataset)
    if args.init_from_keras:
        from models.keras_import import check_source
        check_source(args.init_from_keras, args.model)
    config = run_loop.RunConfig(model=args.model, depth=args.depth, growth_rate=args.growth_rate,
                                data_format=args.data_format, efficient=False, fp16=args.fp16,
                                batch_size=args.batch_size, init_from_keras=args.init_from_keras,
                                mfm_transitions=args.mfm_transitions, mfm_layers=args.mfm_layers)
    results = run_loop.evaluate(dataset, config, checkpoint)
    print('%s (step %d): %s' % (results['checkpoint'], results['global_step'],
                                run_loop.format_metrics(results)))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2, sort_keys=True)


if __name__ == '__main__':
    run_main(main)
