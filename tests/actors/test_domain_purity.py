"""The domain (capflow.actors.model) is plain Python: importing all of it in a fresh
interpreter loads no actor framework, socket library, database toolkit or logging
library."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("pykka", "zmq", "sqlalchemy", "alembic", "loguru", "matplotlib", "rich")

_PROGRAM = """
import importlib, json, pkgutil, sys
import capflow.actors.model as domain
names = [m.name for m in pkgutil.iter_modules(domain.__path__)]
for name in names:
    importlib.import_module("capflow.actors.model." + name)
print(json.dumps({"modules": names,
                  "loaded": [f for f in %r if f in sys.modules]}))
"""


def test_the_whole_domain_imports_no_framework():
    out = subprocess.run([sys.executable, "-c", _PROGRAM % (FRAMEWORKS,)], check=True,
                         capture_output=True, text=True, timeout=60)
    seen = json.loads(out.stdout)
    assert {"ledger", "money", "messages", "risk", "market"} <= set(seen["modules"])
    assert seen["loaded"] == []
