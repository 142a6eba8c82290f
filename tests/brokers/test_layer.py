"""The broker adapters stand on the domain alone: an adapter written outside capflow
imports `capflow.brokers.base` without pulling in the actors, storage or the server."""

from __future__ import annotations

import subprocess
import sys

ALLOWED = ("capflow", "capflow.actors", "capflow.actors.model", "capflow.brokers")


def test_the_brokers_import_only_the_domain():
    code = ("import sys, capflow.brokers.base, capflow.brokers.paper, capflow.brokers.faults\n"
            "print('\\n'.join(sorted(n for n in sys.modules if n.startswith('capflow'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    outside = [n for n in out if n not in ALLOWED
               and not n.startswith(("capflow.actors.model.", "capflow.brokers."))]
    assert outside == []
