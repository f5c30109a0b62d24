"""Train a (memory-efficient) DenseNet. Runs alone or under horovodrun; resumes from --model_dir.

    python train.py                                   # DenseNet-BC-40 on the bundled digits
    python train.py --dataset cifar10 --data_dir DIR --efficient True --fp16 True
    python train.py --dataset cifar10 --model densenet121 --init_from_keras densenet121.h5
    horovodrun -np 2 -H localhost:2 python train.py --dataset cifar10 --data_dir DIR
"""
import sys

from utils import cli  # the rest, TensorFlow included, inside: Ctrl-C there is one line


def parse_args(argv):
    from utils import flags
    parser = flags.ArgumentParser(prog='train.py', description=__doc__.splitlines()[0])
    flags.add_model_flags(parser)
    parser.add_argument('--efficient', type=flags.efficiency, default=flags.efficiency('True'),
                        help='recompute dense layers in back-prop: linear memory (default True); '
                             'shared: no concatenations and batch statistics shared between '
                             'layers, the least memory at about naive speed; every=N: only '
                             'every N-th layer, blocks=2,3: only those blocks')
    parser.add_argument('--train_epochs', type=flags.positive, default=None,
                        help='epochs to train (dataset default: digits 30, (Fashion-)MNIST 15, '
                             'CIFAR 300, ImageNet 90)')
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
                        help='fetch CIFAR, MNIST or Fashion-MNIST into --data_dir (default data/ '
                             'for CIFAR, data/mnist or data/fashion_mnist) if it is not there')
    flags.add_keras_flag(parser, 'start a new run from (fine-tuning; a classifier of another '
                         'class count starts fresh)')
    parser.add_argument('--inject_nan', type=flags.batch_range, default=None,
                        metavar='FIRST[:COUNT]', help='testing: the FIRST (1-based) and COUNT-1 '
                        'next batches this process reads become NaN (fault drills)')
    return parser.parse_args(argv)


def run(args):
    from utils import data, distribution, flags, run_loop
    from utils.config import ModelConfig
    from utils.errors import UsageError
    dist = distribution.current()  # Horovod's init, if launched by horovodrun
    saved = ModelConfig.load(args.model_dir)
    model = flags.resolve_model(args, saved)
    changed = saved.difference(model) if saved else ''
    if changed:
        raise UsageError('%s holds another model (%s); use a new --model_dir' % (
            args.model_dir, changed))
    config = flags.resolve_training(args, model, flags.data_format(args.data_format, dist.gpu))
    if config.init_from_keras:
        flags.check_keras_source(config.init_from_keras, model.model)
    cli.LOG.debug('%s; %s; %s (rank %d of %d)', model, config, type(dist).__name__, dist.rank,
                  dist.size)
    data_dir = args.data_dir or data.default_data_dir(model.dataset)
    if args.download and not model.synthetic and model.dataset in data.DOWNLOADABLE:
        from utils.download import download
        data_dir = download(model.dataset, data_dir)
    run_loop.train(data.for_model(model, data_dir), model, config)


def main(argv=None):
    return cli.run_main(parse_args, run, argv)


if __name__ == '__main__':
    sys.exit(main())
