"""The AuraSeal version (one place; the CLI and ``auraseal version`` read it)."""

VERSION = "0.1.0"
