"""The CLI's errors: each is printed as one line, ``taskctl: <message>``, and sets the exit code.

::

    CliError                 exit 1   the operation failed (API refused it, invalid input, ...)
    ├── UsageError           exit 2   bad flags or arguments (argparse's own errors exit 2 too)
    ├── NotFoundError        exit 3   no such task, execution or log
    └── UnreachableError     exit 4   the gateway or the API server could not be reached

Lower-layer errors (``controller.kube`` errors, aiohttp errors, ``InvalidTask``) are translated
once, where they are caught (``kube_backend``, ``gateway_backend``), with ``raise ... from exc``;
the message always carries the cause.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp


class CliError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the cause contained


class UsageError(CliError):
    exit_code = 2


class NotFoundError(CliError):
    exit_code = 3


class UnreachableError(CliError):
    exit_code = 4


def network_cause(exc: BaseException) -> str:
    """The root cause of a transport failure in a few words: "connection refused", "timed out"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno).lower()
        if isinstance(seen, aiohttp.ClientConnectorError) and seen.os_error is not None and seen.os_error.errno:
            return os.strerror(seen.os_error.errno).lower()
        if isinstance(seen, (asyncio.TimeoutError, TimeoutError)):
            return "timed out"
        if seen.__cause__ is None:
            break
        seen = seen.__cause__
    return " ".join(str(seen or exc).split()) or type(exc).__name__
