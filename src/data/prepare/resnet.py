"""The ImageNet weights of ResNet-101 for the CUB image features: torchvision's
`ResNet101_Weights.IMAGENET1K_V1` (what the released code's `resnet101(pretrained=True)` loads), put into
torch hub's checkpoints directory ($TORCH_HOME/hub/checkpoints), where src/data/cub_features.py finds them.

Torch hub names a weights file by the first hex digits of its sha256 (resnet101-63fe2227.pth): the
download (torch.hub.download_url_to_file, written to a temporary file and moved) and a local file given
with --resnet-weights are both checked against it, then loaded into torchvision's ResNet-101 strictly.
"""
import os
import re
import urllib.error

import torch

from ...errors import UserError
from ..cub_features import weights_file
from .download import check_file, copy_atomic, no_network


def expected_sha256():
    """The sha256 prefix in the published file's name (torch hub's HASH_REGEX convention)."""
    name = os.path.basename(weights_file()[0])
    return re.search(r'-([a-f0-9]*)\.', name).group(1)


def _check_loads(path):
    """The file is a state dict of torchvision's ResNet-101: every key, every shape."""
    import torchvision
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
        torchvision.models.resnet101(weights=None).load_state_dict(state)
    except Exception as e:
        first = (str(e).strip().splitlines() or [''])[0]
        raise UserError(f"{path} is not a ResNet-101 state dict ({type(e).__name__}: {first}).\n"
                        f"  fix: give the file {os.path.basename(weights_file()[0])} that torchvision publishes") \
            from None


def prepare_resnet(local=None):
    """Returns a line to print. local: a copy of the weights file, instead of the download."""
    path, url = weights_file()
    fix = f"download {url} again (or give it with --resnet-weights FILE)"
    if os.path.isfile(path):
        check_file(path, 'sha256', expected_sha256(), 'the ResNet-101 weights file', f'delete it and {fix}')
    elif local:
        check_file(local, 'sha256', expected_sha256(), 'the ResNet-101 weights file', fix)
        _check_loads(local)
        copy_atomic(local, path)
    else:
        manual = (f"download {url} on a machine with network access and give it with --resnet-weights FILE "
                  f"(or put it in {os.path.dirname(path)}; $TORCH_HOME moves that folder); then run this "
                  f"command again")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, path, hash_prefix=expected_sha256(), progress=True)
        except (urllib.error.URLError, OSError) as e:
            raise no_network('the ResNet-101 ImageNet weights', url, e, manual) from None
        except RuntimeError as e:  # torch hub: "invalid hash value" (the temporary file is removed)
            raise UserError(f"the download of {url} does not match its sha256 prefix {expected_sha256()} "
                            f"({e}).\n  fix: run this command again; if it fails again, {manual}") from None
    _check_loads(path)
    return f"resnet: the ImageNet ResNet-101 weights in {path} (sha256 checked, loads into torchvision's ResNet-101)"
