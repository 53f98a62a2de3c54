"""The exceptions fedsynth raises on purpose, under one base.

``UserError`` is bad input a user can fix (a file, column, field or option): the CLI prints its
message, which names what is wrong and the fix, and exits with status 2. Anything that is not a
``FedsynthError`` is a bug and shows as one. Domain errors keep their builtin base as well
(``SchemaError`` is a ``ValueError``), so library callers that catch those keep working.

This module imports nothing: the CLI reads it before any heavy library, so `fedsynth --help`
starts fast.
"""

from __future__ import annotations


class FedsynthError(Exception):
    """Base of every error fedsynth raises on purpose."""


class UserError(FedsynthError):
    """Bad input the user can fix; the message names the file/column/field and the fix."""
