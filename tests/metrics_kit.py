"""Scraping a System's metrics endpoint over HTTP, as Prometheus does, and reading the
samples with the official client's parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(cf) -> dict[str, list]:
    """metric family name -> its samples, from a real HTTP GET of ``/metrics``."""
    with urllib.request.urlopen(f"http://{cf.metrics_address}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict[str, list], name: str, **labels) -> float | None:
    """The value of the one sample `name` with these labels (None: no such sample)."""
    found = [s.value for fam in families.values() for s in fam
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None
