"""Train a VAE or an MMVAE: `python main.py --help` lists the flags."""
import sys

from src.cli import parse_args
from src.errors import UserError
from src.rundir import setup_logging


def main(argv=None):
    setup_logging()
    try:
        args = parse_args(argv)
        from src.train import run
        run(args)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted: the last finished epoch is saved in the run directory', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
