"""The error every `remat` subcommand raises for something the user must fix (exit code 2)."""

from __future__ import annotations

EXIT_USAGE = 2


class UsageError(Exception):
    """Something the user must fix; shown as one line, exit code 2."""
