"""python -m src.data.prepare DATASET ... [--data-dir D]: put the real datasets where the loaders read them."""
import argparse
import sys

from ...errors import report
from .cub import CAPTIONS_FILE, IMAGES_FILE, prepare_cub
from .digits import prepare_mnist, prepare_svhn
from .resnet import prepare_resnet

STEPS = {
    'mnist': lambda a: prepare_mnist(a.data_dir),
    'svhn': lambda a: prepare_svhn(a.data_dir),
    'cub': lambda a: prepare_cub(a.data_dir, a.cub_images, a.cub_captions),
    'resnet': lambda a: prepare_resnet(a.resnet_weights),
}


def parser():
    p = argparse.ArgumentParser(
        prog='python -m src.data.prepare', allow_abbrev=False,
        description='Download (or take from local files), unpack, lay out and check the real datasets: MNIST and '
                    'SVHN (torchvision, md5 checked) into --data-dir, CUB (the CUB-200-2011 images and the '
                    'captions of Reed et al. 2016) into --data-dir/cub, and the ImageNet ResNet-101 weights of '
                    "the CUB image features into torch hub's cache. Each step can be rerun: finished steps "
                    'are checked and skipped, interrupted downloads resume.',
        epilog='Without network: download the files named in the error on another machine and give them '
               'with the flags above (docs/cub.md).')
    p.add_argument('datasets', nargs='+', choices=[*STEPS, 'all'], metavar='DATASET',
                   help=f"what to prepare: {', '.join(STEPS)}, or all")
    p.add_argument('--data-dir', default='data', help="main.py's --data-dir")
    p.add_argument('--cub-images', metavar='FILE', help=f'a local copy of {IMAGES_FILE} (else downloaded)')
    p.add_argument('--cub-captions', metavar='FILE', help=f'a local copy of {CAPTIONS_FILE} (else downloaded)')
    p.add_argument('--resnet-weights', metavar='FILE', help='a local copy of resnet101-63fe2227.pth (else downloaded)')
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    names = list(STEPS) if 'all' in args.datasets else list(dict.fromkeys(args.datasets))
    try:
        for name in names:
            print(STEPS[name](args), flush=True)
    except Exception as e:  # bad input, no network, a full disk: one `error:` line; a bug keeps its traceback
        return report(e)
    except KeyboardInterrupt:
        print('interrupted: run the same command again to continue (finished files are kept, downloads resume)',
              file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
