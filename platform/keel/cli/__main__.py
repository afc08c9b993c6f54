"""`python -m keel.cli ...`: the same as the `keel` command (the embedded worker is started this way)."""
from keel.cli import main

main()
