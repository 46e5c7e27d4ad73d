"""Ledger stores: SQLite (embedded default) and PostgreSQL, behind :class:`Store`."""

from __future__ import annotations

from auraseal.ledger.stores._base import AppendPlan, Store, plan_append

__all__ = ["AppendPlan", "Store", "plan_append"]
