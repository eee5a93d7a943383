"""The one exception type for errors a user can cause and fix."""

from __future__ import annotations


class KdpipeError(Exception):
    """A user-fixable problem: the message names the problem and the fix, on one line.

    Stages catch it, print the message and exit with code 2; no traceback is shown.
    """


def os_error_line(e: OSError) -> str:
    """One line for a failed write outside kdpipe's atomic writes (a library's own files), with the fix."""
    return (
        f"cannot write {e.filename or 'a file'}: {e.strerror or e}; free disk space, fix the path (a file "
        "where a folder belongs?) or its permissions, then re-run"
    )
