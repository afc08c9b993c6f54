"""Goal Agility's hook implementations: the goal tree, revisions that change the goal, the cascade, the guard."""
from __future__ import annotations
