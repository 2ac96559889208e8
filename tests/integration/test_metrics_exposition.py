"""`/metrics` of a real scoring runtime parses with the Prometheus text parser (what Prometheus and the
Grafana dashboard in docs/ read); the hub's is checked in tests/unit/test_hub_metrics.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.runtime_support import http, start_runtime
from tests.support import REPO, Processes


def test_runtime_metrics_parse_and_count_requests(processes: Processes, digits_model: Path) -> None:
    rt = start_runtime(processes, "--model-dir", str(digits_model.parent), "--onnx", "model.onnx", "--name", "digits")
    body = json.dumps({"data": [[0.0] * 64]}).encode()
    for _ in range(5):
        assert http("POST", rt.url + "/score", body, {"Content-Type": "application/json"})[0] == 200
    # One refused request, so the error counter the dashboards chart has a sample too.
    assert http("POST", rt.url + "/score", b"{not json", {"Content-Type": "application/json"})[0] == 400
    status, headers, text = http("GET", rt.url + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families, "nothing parsed"
    kinds = {f.type for f in families.values()}
    assert "histogram" in kinds or "summary" in kinds, kinds  # request latency, for the Grafana quantiles
    request_counts = [s.value for f in families.values() for s in f.samples
                      if "request" in s.name and s.name.endswith(("_total", "_count"))]  # fmt: skip
    assert request_counts and max(request_counts) >= 5, sorted(families)
    # What the Grafana dashboard in docs/ charts of the runtimes, the runtime exposes.
    samples = {s.name for f in families.values() for s in f.samples}
    grafana = (REPO / "docs" / "grafana-edgeport.json").read_text()
    charted = set(re.findall(r"edgeport_(?!hub_)[a-z_]+", grafana))
    missing = sorted(n for n in charted if n not in samples)
    assert charted and not missing, f"docs/grafana-edgeport.json charts what a runtime does not expose: {missing}"
