"""Train a (memory-efficient) DenseNet. Runs alone or under horovodrun; resumes from --model_dir.

    python train.py                                   # DenseNet-BC-40 on the bundled digits
    python train.py --dataset cifar10 --data_dir DIR --efficient True --fp16 True
    python train.py --dataset cifar10 --model densenet121 --init_from_keras densenet121.h5
    horovodrun -np 2 -H localhost:2 python train.py --dataset cifar10 --data_dir DIR
"""

from utils.cli import run_main


def parse_args(argv):
    from utils import flags
    parser = flags.ArgumentParser(description=__doc__.splitlines()[0])
    flags.add_model_flags(parser)
    parser.add_argument('--train_epochs', type=flags.positive, default=None,
                        help='epochs to train (dataset default: digits 30, CIFAR 300, ImageNet 90)')
    parser.add_argument('--max_steps', type=flags.positive_int, default=None,
                        help='stop at this global step instead (overrides --train_epochs)')
    parser.add_argument('--epochs_per_eval', type=flags.non_negative, default=None,
                        help='evaluate on the test split every this many epochs and at the end '
                             '(0: never)')
    parser.add_argument('--learning_rate', type=flags.non_negative, default=None,
                        help='initial rate per worker (default 0.1 x batch/128); x workers, '
                             'then /10 at 50%% and 75%% of training')
    parser.add_argument('--weight_decay', type=flags.non_negative, default=1e-4)
    parser.add_argument('--momentum', type=flags.fraction, default=0.9, help='Nesterov momentum')
    parser.add_argument('--dropout_rate', type=flags.fraction, default=0.0)
    parser.add_argument('--save_checkpoint_steps', type=flags.positive_int, default=500)
    parser.add_argument('--log_every_steps', type=flags.positive_int, default=50)
    parser.add_argument('--seed', type=int, default=None, help='graph-level random seed')
    parser.add_argument('--download', type=flags.str2bool, default=False,
                        help='fetch CIFAR into --data_dir first if it is not there')
    flags.add_keras_flag(parser, 'start a new run from (fine-tuning; a classifier of another '
                         'class count starts fresh)')
    parser.add_argument('--inject_nan', type=flags.batch_range, default=None,
                        metavar='FIRST[:COUNT]', help='testing: the FIRST (1-based) and COUNT-1 '
                        'next batches this process reads become NaN (fault drills)')
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    from utils import data, flags, run_loop
    if args.download and args.dataset in ('cifar10', 'cifar100'):
        from utils.download import download_cifar
        download_cifar(args.dataset, args.data_dir or 'data')
        args.data_dir = args.data_dir or 'data'
    dataset = data.get_dataset(args.dataset, args.data_dir, args.image_size, args.synthetic_like)
    architecture = flags.resolve_model_flags(args, dataset)
    if args.init_from_keras:
        from models.keras_import import check_source
        check_source(args.init_from_keras, args.model)
    defaults = flags.DATASET_DEFAULTS[args.dataset]
    config = run_loop.RunConfig(
        model=args.model, depth=args.depth, growth_rate=args.growth_rate,
        data_format=args.data_format, efficient=args.efficient, fp16=args.fp16,
        dropout_rate=args.dropout_rate, batch_size=args.batch_size, model_dir=args.model_dir,
        train_epochs=args.train_epochs or defaults[4], max_steps=args.max_steps,
        epochs_per_eval=defaults[5] if args.epochs_per_eval is None else args.epochs_per_eval,
        learning_rate=(0.1 * args.batch_size / 128.0 if args.learning_rate is None
                       else args.learning_rate),
        weight_decay=args.weight_decay, momentum=args.momentum,
        save_checkpoint_steps=args.save_checkpoint_steps, log_every_steps=args.log_every_steps,
        seed=args.seed, init_from_keras=args.init_from_keras,
        mfm_transitions=args.mfm_transitions, mfm_layers=args.mfm_layers,
        inject_nan=args.inject_nan)
    saved = flags.load_config(args.model_dir)
    if saved and flags.architecture_difference(saved, architecture):
        raise ValueError('%s holds another model (%s); use a new --model_dir' % (
            args.model_dir, flags.architecture_difference(saved, architecture)))

    def start():
        flags.save_config(args.model_dir, dict(architecture, **config._asdict()))
        print('training %s on %s: batch %d per worker, %s, %s' % (
            flags.model_title(args), args.dataset, args.batch_size,
            {True: 'efficient', False: 'naive'}.get(args.efficient, args.efficient), 'fp16' if args.fp16 else 'fp32'))
    run_loop.train(dataset, config, on_rank0_start=start)


if __name__ == '__main__':
    run_main(main)
