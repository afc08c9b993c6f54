"""Hook implementations of Goal Agility's measures."""
from __future__ import annotations
