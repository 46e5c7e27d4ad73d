"""Subcommands of this part (registered by :func:`register`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this part's subcommands to ``sub`` (none yet)."""
