"""Goal Agility's measures: the monthly snapshot and red flags, market signals, the alignment index, the pulse survey."""
