"""The flood harness's smoke test: ``python -m perf.flood --profile quick`` as a real process on
the e2e cluster, so the harness never rots. Its figures are not judged here, only that it ran
end to end (its speed targets are reported by the harness, never asserted here): every log
landed byte-identical, no execution was lost, the Jobs were cleaned up,
and the JSON, Markdown and PNG outputs were written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cluster import REPO

pytestmark = pytest.mark.e2e

PNG = b"\x89PNG\r\n\x1a\n"


def test_quick_profile_verifies_every_log_and_cleans_up(kubeconfig, tmp_path):
    out = tmp_path / "flood-quick"
    done = subprocess.run([sys.executable, "-m", "perf.flood", "--profile", "quick", "--kubeconfig", kubeconfig,
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"perf.flood exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"

    summary = json.loads(out.with_suffix(".json").read_text())
    correctness = summary["correctness"]
    assert correctness["executions_seen"] >= correctness["executions_expected_at_least"] == 5
    assert correctness["verified_identical"] == correctness["stored"] == correctness["executions_seen"]
    assert correctness["bytes_verified"] == correctness["bytes_expected"] > 0
    assert correctness["tasks_without_execution"] == [] and correctness["executions_not_verified"] == {}
    assert correctness["jobs_remaining"] == []
    assert all(check["pass"] for check in summary["checks"]), summary["checks"]
    for execution in summary["executions"]:
        assert execution["verified"] and execution["landed_sha256"] == execution["log_sha256"], execution
    # The baselines ran in the same run, so the figures are ratios.
    assert summary["baselines"]["logs"]["kubectl_identical"] is True
    assert summary["baselines"]["direct"]["count"] == 4
    assert {"aggregate_vs_parallel_curl", "reconcile_throughput_vs_direct_create"} <= set(summary["ratios"])
    assert summary["operator"]["peak_rss_mb"] > 0 and summary["meta"]["operator_exit"] == 0

    markdown = out.with_suffix(".md").read_text()
    assert "## Verdict" in markdown and "| every log verified byte-identical | PASS |" in markdown
    for name in ("throughput", "resources", "queues", "latency"):
        png = out.with_name(f"{out.name}-{name}.png")
        assert png.read_bytes()[:8] == PNG, png
        assert f"]({png.name})" in markdown
