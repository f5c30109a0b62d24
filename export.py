"""Export a checkpoint as a frozen graph (and SavedModel), or classify images with a frozen graph.

    python export.py --model_dir runs/digits --output digits.pb [--saved_model DIR]
    python export.py --init_from_keras densenet121.h5 --model densenet121 --output in1k.pb
    python export.py --predict digits.pb image1.png image2.jpg
"""
import sys

from utils import cli  # the rest, TensorFlow included, inside: Ctrl-C there is one line


def parse_args(argv):
    from utils import flags
    return flags.export_parser(__doc__.splitlines()[0]).parse_args(argv)


def predict(args):
    from utils.predict import Predictor
    predictor = Predictor(args.predict)
    images = predictor.read(args.images)
    for path, (classes, probs) in zip(args.images, predictor.top_k(images, args.top_k)):
        cli.LOG.info('%s: %s', cli.shown(path), ', '.join('%d (%.3f)' % cp
                                                          for cp in zip(classes, probs)))
        if cli.output_closed():  # `| head`: the rest would go nowhere
            return


def run(args):
    if args.predict:
        return predict(args)
    import contextlib
    from utils import checkpoints, data, export, resolve
    job = resolve.for_export(args)
    frozen, saved = export.reserve(args.output, args.saved_model, checkpoints.protected(
        args.model_dir, job.checkpoint, job.keras_weights))
    with frozen or contextlib.suppress(), saved or contextlib.suppress():
        spec = data.spec(job.model.dataset, job.model.image_size)
        graph_def = export.freeze(job.checkpoint, spec, job.model, job.keras_weights)
        if frozen:
            size = export.write_frozen(graph_def, frozen)
            cli.LOG.info('wrote %s (%.1f MB): input %r float32 [None, %s] raw pixels 0-%g -> '
                         '%r, %r', args.output, size / 1e6, export.INPUT,
                         ', '.join(map(str, spec.image_shape)), spec.pixel_max, export.LOGITS,
                         export.PROBABILITIES)
        if saved:
            export.write_saved_model(graph_def, saved)
            cli.LOG.info('wrote SavedModel %s: serving_default images -> logits, probabilities, '
                         'classes', args.saved_model)


def main(argv=None):
    return cli.run_main(parse_args, run, argv)


if __name__ == '__main__':
    sys.exit(main())
