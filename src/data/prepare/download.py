"""Downloads that survive interruption, and checksums.

A download goes to `<file>.part` and is renamed to `<file>` only once it is complete and its
checksum matches, so a file under its final name is always whole. A rerun continues a `.part`
file where it stopped (an HTTP Range request) when the server allows it, else starts again.
"""
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request

from tqdm import tqdm

from ...errors import FAULTS, UserError

CHUNK = 1 << 20
USER_AGENT = 'mmvae-data/1.0'


class NoNetwork(UserError):
    """A download failed: the message names the URL and the way to get the file by hand."""


def no_network(what, url, error, manual):
    reason = (str(getattr(error, 'reason', '') or error).strip().splitlines() or [''])[0]
    return NoNetwork(f"could not download {what} from {url} ({type(error).__name__}: {reason}).\n"
                     f"  fix: {manual}")


def file_digest(path, algorithm, desc=None):
    """Hex digest of a file, read in chunks (with a progress bar for large files)."""
    h = hashlib.new(algorithm)
    size = os.path.getsize(path)
    with open(path, 'rb') as f, tqdm(total=size, unit='B', unit_scale=True, desc=desc or f'{algorithm} check',
                                     disable=None if size > 64 * CHUNK else True, leave=False) as bar:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def check_file(path, algorithm, expected, what, fix):
    """A UserError unless the file's digest starts with `expected` (torch hub names files by a prefix)."""
    digest = file_digest(path, algorithm, desc=f'checking {os.path.basename(path)}')
    if not digest.startswith(expected):
        raise UserError(f"{what} {path} is not the published file: its {algorithm} is {digest[:len(expected)]}, "
                        f"expected {expected}.\n  fix: {fix}")


def download(url, path, what, manual, md5=None):
    """Fetch url into path (resumable, see above); md5 checked when given. Returns path."""
    if os.path.isfile(path):
        return path
    part = path + '.part'
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        _fetch(url, part, what)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        if getattr(e, 'errno', None) in FAULTS:
            raise  # the disk, not the network: reported as a write failure
        raise no_network(what, url, e, manual) from None
    if md5 is not None:
        digest = file_digest(part, 'md5', desc=f'checking {os.path.basename(path)}')
        if digest != md5:
            os.remove(part)
            raise UserError(f"the download of {what} from {url} is corrupt (md5 {digest}, expected {md5}); it was "
                            f"removed.\n  fix: run the same command again; if it fails again, {manual}")
    os.replace(part, path)
    return path


def _fetch(url, part, what):
    done = os.path.getsize(part) if os.path.isfile(part) else 0
    headers = {'User-Agent': USER_AGENT}
    if done:
        headers['Range'] = f'bytes={done}-'
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
        if done and r.status != 206:  # the server ignores Range: start again
            done = 0
        total = r.length + done if r.length is not None else None
        with open(part, 'ab' if done else 'wb') as f, \
                tqdm(total=total, initial=done, unit='B', unit_scale=True, desc=what, disable=None) as bar:
            while chunk := r.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and os.path.getsize(part) != total:
        raise urllib.error.URLError(f'the connection closed after {os.path.getsize(part):,} of {total:,} bytes')


def copy_atomic(src, dst):
    """Copy a file so that dst appears only complete (a temporary file renamed)."""
    tmp = dst + '.part'
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
