"""The data command: `python -m src.data.prepare mnist svhn cub resnet --data-dir D`.

Each step puts one dataset (or the ResNet-101 weights) where the loaders read it, checks it, and
can be run again: a finished step is checked and skipped, and an interrupted download or unpack
leaves nothing that a rerun or a loader takes for complete.

  download.py   resumable downloads, checksums, the `error:` line without network
  digits.py     MNIST and SVHN through torchvision's downloaders and checksums
  cub.py        CUB-200-2011 images + the captions of Reed et al. (2016) -> <data-dir>/cub
  resnet.py     the ImageNet ResNet-101 weights into torch hub's cache
  __main__.py   the command line
"""
