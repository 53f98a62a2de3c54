"""Flower's and Ray's output to a log file in the run directory, not to the operator's terminal.

A simulated federation prints Ray's start-up lines, every site's error with Ray's traceback and
Flower's round summaries; the operator needs the outcome (what ``fedsynth train`` prints from
the run directory afterwards) and where the details are. Ray's processes write straight to the
file descriptors they inherit, Flower's and Ray's loggers to the stream they were given when
imported, so both are redirected: file descriptors 1 and 2, ``sys.stdout``/``sys.stderr`` and
those loggers' handlers, each put back afterwards. The root logger's handlers are swapped too:
Opacus calls ``logging.basicConfig`` on import, which would print every Flower line a second time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

LIBRARY_LOGGERS = ("flwr", "ray")


def terminal_stream(stream: TextIO | None = None) -> TextIO:
    """A stream to where ``stream`` (default ``sys.stdout``) writes now, which
    :func:`library_output_to` does not capture: a progress display stays on the terminal.

    A stream with no file descriptor (a test runner's buffer) is returned as it is: the block
    replaces ``sys.stdout``, not that object.
    """
    stream = stream or sys.stdout
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    with contextlib.suppress(Exception):
        stream.flush()
    return os.fdopen(os.dup(descriptor), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8")


@contextlib.contextmanager
def library_output_to(path: Path) -> Iterator[Path]:
    """Append everything printed or logged inside the block (this process and the processes it
    starts) to ``path``; the terminal gets it back on leaving the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS] + [logging.getLogger()]
    saved_loggers = [(logger.handlers[:], logger.propagate) for logger in loggers]
    with open(path, "a", encoding="utf-8", buffering=1) as log:
        saved_fds = [os.dup(1), os.dup(2)]
        file_handler = logging.StreamHandler(log)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            for logger in loggers:
                logger.handlers = [file_handler]
                logger.propagate = False
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield path
        finally:
            with contextlib.suppress(Exception):
                log.flush()
            for logger, (handlers, propagate) in zip(loggers, saved_loggers, strict=True):
                logger.handlers = handlers
                logger.propagate = propagate
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
