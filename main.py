"""Train a VAE or an MMVAE: `python main.py --help` lists the flags."""
import sys

from src.cli import parse_args
from src.errors import report
from src.rundir import setup_logging


def main(argv=None):
    setup_logging()
    try:
        args = parse_args(argv)
        from src.train import run
        run(args)
    except Exception as e:  # bad input, a full disk: one `error:` line; a bug keeps its traceback
        return report(e)
    except KeyboardInterrupt:
        print('interrupted: the last finished epoch is saved in the run directory', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
