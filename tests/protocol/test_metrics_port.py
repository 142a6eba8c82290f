"""`capflow serve` whose metrics endpoint cannot listen (`[metrics] listen` on a port in
use): one line naming the setting and the cause, never an OSError traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from ..test_run import free_endpoint

CAPFLOW = str(Path(sys.executable).with_name("capflow"))


def test_serve_with_the_metrics_port_in_use_names_the_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFLOW_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env.update(CAPFLOW_SERVER__ENDPOINT=free_endpoint(),
                   CAPFLOW_SERVER__EVENTS_ENDPOINT=free_endpoint(),
                   CAPFLOW_METRICS__LISTEN=f"127.0.0.1:{port}", CAPFLOW_LOG__LEVEL="WARNING")
        done = subprocess.run([CAPFLOW, "serve"], cwd=tmp_path, env=env, timeout=120,
                              capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert (f"capflow: [metrics] listen = '127.0.0.1:{port}': cannot listen there: "
            "Address already in use") in done.stderr, done.stderr
