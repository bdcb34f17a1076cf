"""Errors that the entry points report as one clear message and a non-zero exit, without a traceback."""
import errno
import os
import sys


class UserError(Exception):
    """Bad input from the user (flags, files, data): the message names the problem and the fix."""


# OS errors that are faults of the machine rather than of the program: the disk, the quota or the
# file-size limit is full, the file system is read-only, the permissions are wrong, the device fails.
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
FAULTS = FULL | {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def what_to_do(error):
    """The usual first step after an OSError, in words."""
    if error.errno in FULL:
        return 'free some disk space (or raise the quota)'
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return 'fix the permissions (a read-only file system cannot be written)'
    return 'give a path that can be written'


class WriteError(UserError):
    """A file could not be written (an OSError). The project's writers (src/files.py) leave nothing
    half-written: the file keeps its previous content, or is absent."""

    def __init__(self, path, error):
        self.path, self.error = os.fspath(path), error
        self.reason = error.strerror or str(error)
        super().__init__(f"could not write {self.path}: {self.reason}.\n  fix: {what_to_do(error)}, or write "
                         f"somewhere else; then run the same command again (finished files are kept)")


def as_user_error(e):
    """The UserError to report for exception e, or None for a bug (to show with its traceback): an OSError
    that is a fault of the machine (a full disk, quota, permissions) becomes one naming its file."""
    if isinstance(e, UserError):
        return e
    if isinstance(e, OSError) and e.errno in FAULTS:
        where = f'{e.filename}: ' if e.filename else ''
        return UserError(f"{where}{e.strerror or e}.\n  fix: {what_to_do(e)}, or use another directory; then run "
                         f"the same command again")
    return None


def report(e):
    """Print e as the one `error:` line of an entry point and return the exit status 2; re-raise a bug."""
    err = as_user_error(e)
    if err is None:
        raise e
    print(f'error: {err}', file=sys.stderr)
    return 2
