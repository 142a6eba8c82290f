"""The wire fixtures of tests/protocol for the attack tests: a live server over a real
System, raw DEALER sockets, a replayed market, and CURVE peers with their keys."""

from ..protocol.conftest import live, market, raw  # noqa: F401 -- fixtures
from ..protocol.test_curve_peers import gateway, keys_dir, peer  # noqa: F401 -- fixtures
