"""Errors a user can cause and fix; the CLI prints them as one line, the server as a 4xx."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for (bad path, bad option, bad input file)."""
