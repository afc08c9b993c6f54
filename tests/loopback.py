"""The loopback HTTP server tests script (shipped to plugin authors as keel.testing.loopback)."""
from keel.testing.loopback import LoopbackServer, Reply, Seen  # noqa: F401
