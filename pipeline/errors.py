"""The one exception type for errors a user can cause and fix."""

from __future__ import annotations


class KdpipeError(Exception):
    """A user-fixable problem: the message names the problem and the fix, on one line.

    Stages catch it, print the message and exit with code 2; no traceback is shown.
    """
