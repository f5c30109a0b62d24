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
    return flags.train_parser(__doc__.splitlines()[0]).parse_args(argv)


def run(args):
    from utils import data, distribution, resolve, run_loop
    dist = distribution.current()  # Horovod's init, if launched by horovodrun
    job = resolve.for_train(args, dist.gpu)
    cli.LOG.debug('%s; %s; %s (rank %d of %d)', job.model, job.config, type(dist).__name__,
                  dist.rank, dist.size)
    data_dir = job.data_dir
    if job.download:
        from utils.data.download import download
        data_dir = download(job.model.dataset, data_dir)
    run_loop.train(data.for_model(job.model, data_dir), job.model, job.config)


def main(argv=None):
    return cli.run_main(parse_args, run, argv)


if __name__ == '__main__':
    sys.exit(main())
