"""``taskctl`` (and ``kubectl-task``): argv and environment in, exit code out.

The only module that reads ``os.environ``, ``sys.argv`` and the terminal's properties. It parses
the flags, resolves ``Settings`` (flags > environment > config file), runs the verb, and prints
any error as one line ``taskctl: <message>`` on stderr with the error's exit code (0 ok,
1 failed, 2 usage, 3 not found, 4 unreachable, 130 interrupted). An unexpected exception (a bug)
is one line too; ``TASKCTL_DEBUG=1`` lets its traceback through.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Sequence

from .cli import build_parser
from .commands import COMMANDS, Context
from .errors import CliError, UsageError
from .settings import resolve


def _version() -> str:
    try:
        return version("fabric-tasks")
    except PackageNotFoundError:
        return "0.0.0"


async def _run(ctx: Context, cmd: str, args: object) -> int:
    try:
        return await COMMANDS[cmd](ctx, args)
    finally:
        await ctx.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    err = sys.stderr
    try:
        args = parser.parse_args(argv)
        if getattr(args, "version", False):
            print(f"taskctl {_version()}")
            return 0
        if not getattr(args, "cmd", None):
            if getattr(args, "verb", None) is None:
                parser.print_help()
                return 0
            raise UsageError(f"taskctl {args.verb}: missing verb (see 'taskctl {args.verb} --help')")
        stdout_tty = sys.stdout.isatty()
        settings = resolve(
            args, os.environ, stdout_tty=stdout_tty, stdin_tty=sys.stdin.isatty(),
            terminal_width=shutil.get_terminal_size((100, 24)).columns if stdout_tty else None,
            stdout_encoding=getattr(sys.stdout, "encoding", None))
        ctx = Context(settings=settings, out=sys.stdout, err=err, stdin=sys.stdin)
        return asyncio.run(_run(ctx, args.cmd, args))
    except CliError as exc:
        message = exc.message if exc.message.startswith("taskctl") else f"taskctl: {exc.message}"
        err.write(message + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        err.write("taskctl: interrupted\n")
        return 130
    except BrokenPipeError:
        # `taskctl logs x | head`: the reader left; that is not an error.
        try:  # Python's own advice: point stdout at devnull so the exit-time flush is quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line; the traceback on request
        if os.environ.get("TASKCTL_DEBUG") == "1":
            raise
        err.write(f"taskctl: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
                  "(TASKCTL_DEBUG=1 shows the traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
