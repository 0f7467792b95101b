"""The flood harness's pure parts: profile parsing, the expected content of the kind/real-cluster
writer, metric parsing, and the figures and verdicts computed from what a run saw."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from perf.common import percentile  # noqa: E402
from perf.flood import profile as profiles  # noqa: E402
from perf.flood.logsource import Expected, container_expected, writer_command  # noqa: E402
from perf.flood.sampler import parse_metrics  # noqa: E402
from perf.flood.summary import counter_delta, rates, summarize, union_length  # noqa: E402
from perf.flood.tracker import Execution, TaskInfo  # noqa: E402

MiB = 1024 * 1024


@pytest.mark.parametrize("text,size", [
    pytest.param("100Mi", 100 * MiB, id="mebibytes"),
    pytest.param("1Gi", 1024 * MiB, id="gibibytes"),
    pytest.param("16Ki", 16384, id="kibibytes"),
    pytest.param("1G", 10**9, id="decimal"),
    pytest.param("65536", 65536, id="plain-bytes"),
    pytest.param(4096, 4096, id="int"),
])
def test_sizes_parse(text, size):
    assert profiles.parse_size(text) == size


def test_a_bad_size_is_refused():
    with pytest.raises(ValueError, match="not a size"):
        profiles.parse_size("lots")


@pytest.mark.parametrize("size,label", [(100 * MiB, "100mi"), (1024 * MiB, "1gi"), (16384, "16ki"), (1000, "1000b")])
def test_size_labels_fit_namespace_names(size, label):
    assert profiles.size_label(size) == label


def test_every_built_in_profile_loads():
    names = sorted(p.stem for p in profiles.PROFILES.glob("*.yaml"))
    assert {"quick", "full", "burst1000"} <= set(names)
    full = profiles.load("full")
    assert full.tasks == 55 and full.one_off == 50
    assert {(c.size, c.tasks) for c in full.logs} == {(100 * MiB, 50), (1024 * MiB, 5)}
    assert profiles.load("burst1000").tasks == 1000


def test_unknown_profile_keys_are_errors():
    with pytest.raises(ValueError, match="unknown profile keys"):
        profiles.from_mapping({"name": "x", "description": "", "logs": [{"size": "1Mi", "one_off": 1}], "taskpool": "a"})


def test_operator_settings_become_flags():
    p = profiles.from_mapping({"name": "x", "description": "", "logs": [{"size": "1Mi", "one_off": 1}],
                               "operator": {"log_max_streams": 3, "log_bytes_per_second": "8Mi",
                                            "log_requests_per_second": 5}, "task_pool": "batch"})
    assert p.operator.args() == ["--workers", "16", "--log-max-streams", "3", "--log-bytes-per-second",
                                 str(8 * MiB), "--log-requests-per-second", "5"]
    assert p.task_pool == "batch" and p.parallel() == 3


@pytest.mark.parametrize("size,rate", [
    pytest.param(0, None, id="empty"),
    pytest.param(99, None, id="part-of-a-line"),
    pytest.param(100, None, id="one-line"),
    pytest.param(12345, None, id="unpaced"),
    pytest.param(3 * MiB + 7, None, id="unpaced-mib"),
    pytest.param(25 * MiB + 7, 1000 * MiB, id="paced-in-chunks"),
])
def test_the_container_writer_writes_what_is_expected(size, rate):
    written = subprocess.run(writer_command(size, rate), capture_output=True, check=True).stdout
    assert container_expected(size) == Expected(len(written), hashlib.sha256(written).hexdigest())
    assert len(written) == size


def test_metrics_are_summed_over_labels_and_broken_down():
    text = ('# TYPE rest_client_requests_total counter\n'
            'rest_client_requests_total{code="200",method="GET",host="h"} 3\n'
            'rest_client_requests_total{code="201",method="POST",host="h"} 2\n'
            'other_total 9\n')
    assert parse_metrics(text, ("rest_client_requests_total",)) == {
        "rest_client_requests_total": 5.0, "rest_client_requests_total{method=GET}": 3.0,
        "rest_client_requests_total{method=POST}": 2.0}


@pytest.mark.parametrize("intervals,length", [
    pytest.param([], 0.0, id="none"),
    pytest.param([(0, 2), (1, 3)], 3.0, id="overlapping"),
    pytest.param([(0, 1), (5, 6)], 2.0, id="gap-not-counted"),
    pytest.param([(0, 10), (2, 3)], 10.0, id="nested"),
])
def test_union_length_counts_time_with_a_log_in_flight(intervals, length):
    assert union_length(intervals) == length


def test_rates_and_deltas_of_counters():
    samples = [{"t": 0, "phase": "baselines", "c": 5}, {"t": 2, "phase": "flood", "c": 9},
               {"t": 3, "phase": "flood"}, {"t": 4, "phase": "drain", "c": 19}, {"t": 5, "phase": "cleanup", "c": 30}]
    assert rates(samples, "c") == [(2, 2.0), (4, 5.0), (5, 11.0)]
    assert counter_delta(samples, "c", ("flood", "drain")) == 14


def test_percentile_is_nearest_rank():
    assert percentile([3, 1, 2], 0.5) == 2
    assert percentile(list(range(100)), 0.99) == 98


def _run(verified: bool = True, job_deleted: bool = True, lost_task: bool = False):
    expected = Expected(100, "ab" * 32)
    tasks = {f"t{i}": TaskInfo(f"t{i}", "ns", 100, expected, scheduled=False, sent=10.0 + i, created=True)
             for i in range(3)}
    executions = {}
    for i in range(3 - lost_task):
        executions[f"t{i}-1"] = Execution(
            f"t{i}-1", f"t{i}", "ns", started=10.0 + i, job_seen=10.5 + i, pod_running=11.0 + i, pod_done=12.0 + i,
            log_state="stored", log_final=13.0 + i, log_size=100, log_sha256=expected.sha256,
            job_deleted=14.0 + i if job_deleted else None, landed_size=100,
            landed_sha256=expected.sha256 if verified else "00" * 32, verified=verified)
    samples = [{"t": 10.0, "phase": "flood", "operator.hwm_mb": 60.0, "operator.rss_mb": 50.0,
                "operator.fabric_log_bytes_shipped_total": 0, "operator.fabric_log_ship_duration_seconds_sum": 0},
               {"t": 16.0, "phase": "drain", "operator.hwm_mb": 70.0, "operator.fabric_log_bytes_shipped_total": 300,
                "operator.fabric_log_ship_duration_seconds_sum": 6.0}]
    base = {"logs": {"parallel": 2, "parallel_curl_bps": 100.0, "curl_bps": 60.0, "kubectl_bps": 50.0, "size": 100},
            "direct": {"count": 3, "per_second": 3.0, "latency_s": {"n": 3, "p50": 0.1, "p99": 0.25}}}
    profile = profiles.from_mapping({"name": "t", "description": "", "logs": [{"size": 100, "one_off": 3}]})
    return summarize(profile, tasks, executions, samples, base, {"t0": 10.0})


def test_a_clean_run_passes_and_reports_ratios():
    s = _run()
    assert s["ok"] and all(c["pass"] for c in s["checks"])
    assert s["correctness"]["bytes_verified"] == 300
    assert s["latency_s"]["task_to_job"]["p50"] == pytest.approx(0.5)
    # 300 B while some log was in flight from 11 to 15 s: 75 B/s against 100 B/s for the curls.
    assert s["ratios"]["aggregate_vs_parallel_curl"] == pytest.approx(0.75)
    assert s["ratios"]["reconcile_throughput_vs_direct_create"] == pytest.approx((3 / 2.5) / 3.0)
    # The operator's own ship durations: 300 B in 6 stream-seconds, what one of two curls got.
    assert s["throughput_bps"]["stream_mean"] == 50.0
    assert s["ratios"]["stream_mean_vs_one_of_parallel_curls"] == pytest.approx(1.0)
    assert s["operator"]["peak_rss_mb"] == 70.0
    assert [c["pass"] for c in s["perf_checks"]] == [False, True]


@pytest.mark.parametrize("kwargs,failed", [
    pytest.param({"verified": False}, {"every log verified byte-identical", "no execution lost"}, id="bytes-differ"),
    pytest.param({"job_deleted": False}, {"Jobs cleaned up"}, id="jobs-left"),
    pytest.param({"lost_task": True}, {"every log verified byte-identical", "no execution lost"}, id="execution-lost"),
])
def test_correctness_failures_fail_the_run(kwargs, failed):
    s = _run(**kwargs)
    assert not s["ok"]
    assert {c["name"] for c in s["checks"] if not c["pass"]} == failed
