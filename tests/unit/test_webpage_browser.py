"""The web page in a real browser (headless chromium via selenium, ``browser.py``) against the
real gateway on a loopback port (temporary SQLite file and blob directory, user tokens), seeded
through the internal API as the operator would (``webgw.Seeder``).

Covered: the pure helpers of ``web/format.js`` as a table; signing in; the task list with its
scheduled indicator, PAUSED, next run in the viewer's time zone and the schedule in words;
filtering; opening a task by keyboard; the executions timeline; a 5000-line log that is only ever
fetched by pages (tail, scroll back, top, search, download); following a running log to its end
while the test appends chunks and then finalizes; a read-only token that sees no write buttons and
whose forged write request gets 403. Pause and resume against a real cluster:
``tests/e2e/test_webpage_schedule_ops.py``.

``FABRIC_WEBPAGE_SCREENSHOTS=<dir>`` saves screenshots of the list and task pages there (the
README's come from ``FABRIC_WEBPAGE_SCREENSHOTS=docs``).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from browser import browser, css, fetch, loaded, sign_in, step, texts, wait  # noqa: F401 - browser: fixture
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from webgw import ANN, BOB, USERS, Seeder, serving, settings_for

SHOTS = os.environ.get("FABRIC_WEBPAGE_SCREENSHOTS")


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Seeder]:
    async with serving(settings_for(tmp_path, USERS)) as seeder:
        yield seeder


async def seed_history(gw: Seeder) -> datetime:
    """team-a: a schedule with four executions, a paused schedule, a failed one-off; team-b: a
    task ann may not read."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    await gw.record("nightly", kind="task", type="scheduled", schedule="@hourly", status="Active",
                    skillName="backup", start=iso(now - timedelta(hours=1)),
                    spec={"schedule": "@hourly", "template": {"image": "busybox"}})
    outcomes = [("Succeeded", None), ("Failed", "BackoffLimitExceeded"), ("Running", None), ("Queued", "PoolFull")]
    for i, (status, reason) in enumerate(outcomes, 1):
        start = now - timedelta(hours=5 - i)
        fields = {"end": iso(start + timedelta(seconds=61))} if status in ("Succeeded", "Failed") else {}
        await gw.record(f"nightly-{i}", parent="nightly", type="scheduled", status=status,
                        **({"statusReason": reason} if reason else {}), start=iso(start), **fields)
    await gw.record("paused-report", kind="task", type="scheduled", schedule="0 3 * * *", status="Paused",
                    spec={"schedule": "0 3 * * *", "suspend": True})
    await gw.record("once-failed", kind="task", type="onetime", status="Failed", statusReason="Error",
                    start=iso(now - timedelta(minutes=30)))
    await gw.record("hidden-task", "team-b", kind="task", type="onetime", status="Succeeded")
    return now


def row_names(driver: Any) -> set[str]:
    return {e.get_attribute("data-name") for e in driver.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")}


# --- pure helpers ---------------------------------------------------------------------------------

NOW_MS = 1767232800000  # 2026-01-01T02:00:00Z
FORMAT_CASES = [
    pytest.param("formatDuration", [0], "0s", id="duration-zero"),
    pytest.param("formatDuration", [61], "1m 1s", id="duration-minute"),
    pytest.param("formatDuration", [3600], "1h", id="duration-hour"),
    pytest.param("formatDuration", [90061], "1d 1h", id="duration-two-units-at-most"),
    pytest.param("formatDuration", [None], "", id="duration-none"),
    pytest.param("formatTime", ["2026-03-08T06:59:59Z", "America/New_York"], "2026-03-08 01:59:59 EST", id="time-est"),
    pytest.param("formatTime", ["2026-03-08T07:00:00Z", "America/New_York"], "2026-03-08 03:00:00 EDT", id="time-edt"),
    pytest.param("formatTime", ["2026-07-01T12:00:00.000Z", "Asia/Kolkata"], "2026-07-01 17:30:00 GMT+5:30",
                 id="time-half-hour-zone"),
    pytest.param("relativeTime", ["2026-01-01T02:05:00Z", NOW_MS], "in 5m", id="relative-future"),
    pytest.param("relativeTime", ["2025-12-31T23:00:00Z", NOW_MS], "3h ago", id="relative-past"),
    pytest.param("relativeTime", ["2026-01-01T02:00:00Z", NOW_MS], "just now", id="relative-now"),
    pytest.param("sinceTime", ["2h", NOW_MS], "2026-01-01T00:00:00Z", id="since-duration"),
    pytest.param("sinceTime", ["2025-12-01T00:00:00Z", NOW_MS], "2025-12-01T00:00:00Z", id="since-time"),
    pytest.param("sinceTime", ["yesterday", NOW_MS], {"error": 'since "yesterday": a duration (10m, 2h, 3d) or an RFC 3339 time'},
                 id="since-bad"),
    pytest.param("listQuery", [{"status": "failed, RUNNING", "type": "scheduled"}, NOW_MS],
                 "kind=task&type=scheduled&status=Failed&status=Running", id="list-statuses-or"),
    pytest.param("listQuery", [{"schedule": "nightly", "since": "1d", "limit": "5"}, NOW_MS],
                 "kind=execution&schedule=nightly&since=2025-12-31T02%3A00%3A00Z&limit=5", id="list-a-schedules-runs"),
    pytest.param("listQuery", [{"status": "done"}, NOW_MS],
                 {"error": 'unknown status "done": one of Pending, Queued, Running, Succeeded, Failed, Active, Paused, Invalid'},
                 id="list-bad-status"),
    pytest.param("outcome", ["Failed"], {"cls": "bad", "label": "Failed"}, id="outcome-failed"),
    pytest.param("outcome", ["Active", True], {"cls": "off", "label": "PAUSED"}, id="outcome-paused"),
    pytest.param("outcome", [None], {"cls": "unknown", "label": "unknown"}, id="outcome-none"),
    pytest.param("mayWrite", [{"write": ["team-a"]}, "team-b"], False, id="write-other-namespace"),
    pytest.param("mayWrite", [{"write": ["*"]}, "team-b"], True, id="write-everywhere"),
    pytest.param("queueText", [{"status": "Queued", "statusReason": "PoolFull", "queue": {"position": 2, "pool": "gpu"}}],
                 "PoolFull (#2 in gpu)", id="queue-place"),
    pytest.param("queueText", [{"status": "Queued", "statusReason": "PoolFull"}], "PoolFull", id="queue-unknown-place"),
    pytest.param("rowsQuery", ["back", {"first": 500, "page": 200}], "before=500&tail=200", id="rows-back"),
    pytest.param("rowsQuery", ["refresh", {"last": 10, "page": 50}], "after=9&limit=50", id="rows-refresh-last-line"),
    pytest.param("rowsQuery", ["top", {"search": {"grep": "a b", "regex": True}}], "limit=200&grep=a+b&regex=true",
                 id="rows-search"),
    pytest.param("mergeRows", [[{"line": 1, "text": "a"}, {"line": 2, "text": "pa"}],
                               [{"line": 2, "text": "partial"}, {"line": 3, "text": "c"}], "end", 2],
                 [{"line": 2, "text": "partial"}, {"line": 3, "text": "c"}], id="merge-replaces-grown-line-and-cuts"),
    pytest.param("mergeRows", [[{"line": 5}, {"line": 6}], [{"line": 3}, {"line": 4}], "start", 3],
                 [{"line": 3}, {"line": 4}, {"line": 5}], id="merge-back-drops-the-newest"),
]


async def test_format_helpers(gw: Seeder, browser: Any) -> None:
    """format.js's pure functions, as a table, run in the browser that runs the page."""
    cases = [list(p.values) for p in FORMAT_CASES]

    def run() -> list[Any]:
        browser.get(gw.running.public_url + "/ui/static/page.css")  # any page of the origin
        return browser.execute_async_script(
            """
            const [cases, done] = arguments;
            import("/ui/static/format.js").then((m) => done(cases.map(([fn, args]) => {
              try { return {value: m[fn](...args)}; } catch (e) { return {error: e.message}; }
            }))).catch((e) => done(String(e)));
            """,
            cases,
        )

    results = await step(run)
    assert isinstance(results, list), results
    for param, got in zip(FORMAT_CASES, results):
        expected = param.values[2]
        actual = got if "error" in got else got["value"]
        assert actual == expected, (param.id, actual)


# --- list, filter, one task ------------------------------------------------------------------------


async def test_list_filter_and_open_a_task_by_keyboard(gw: Seeder, browser: Any) -> None:
    await seed_history(gw)
    url = gw.running.public_url

    def list_page() -> None:
        sign_in(browser, url + "/ui/", ANN)
        loaded(browser, "list")
        assert row_names(browser) == {"nightly", "paused-report", "once-failed"}  # not team-b's
        assert css(browser, "#who").text == "Signed in as ann"
        assert css(browser, "#zone").text == "Times in America/New_York"
        paused = css(browser, 'tr[data-name="paused-report"]')
        assert css(paused, '[data-col="status"]').text == "PAUSED"
        assert css(paused, '[data-col="next"]').text == "none while paused"
        nightly = css(browser, 'tr[data-name="nightly"]')
        wait(browser, lambda d: "Every hour" in css(nightly, '[data-col="schedule"]').text, "the schedule in words")
        assert "scheduled" in css(nightly, '[data-col="schedule"]').text
        next_run = wait(browser, lambda d: css(nightly, '[data-col="next"]').text, "the next run")
        assert next_run.startswith("20") and ":00:00 E" in next_run and "(in " in next_run, next_run  # EST/EDT
        assert "ago)" in css(nightly, '[data-col="last"]').text
        assert css(browser, 'tr[data-name="once-failed"] [data-col="status"]').text == "Failed"
        if SHOTS:
            browser.save_screenshot(str(Path(SHOTS) / "webpage-list.png"))

        # Filters as in taskctl list; the page's URL keeps them (never a token).
        status_field = css(browser, '#filters input[name="status"]')
        status_field.send_keys("failed")
        status_field.send_keys(Keys.ENTER)
        loaded(browser, "list")
        assert row_names(browser) == {"once-failed"}
        assert browser.current_url.endswith("?status=failed") and ANN not in browser.current_url
        css(browser, "#clear-filters").click()
        wait(browser, lambda d: row_names(d) == {"nightly", "paused-report", "once-failed"}, "the cleared filter")
        css(browser, '#filters select[name="type"]').send_keys("scheduled")
        css(browser, '#filters button[type="submit"]').click()
        wait(browser, lambda d: row_names(d) == {"nightly", "paused-report"}, "the scheduled filter")
        css(browser, '#filters input[name="status"]').send_keys("nonsense")
        css(browser, '#filters button[type="submit"]').click()
        wait(browser, lambda d: "unknown status" in css(d, "#filter-error").text, "the filter error")

        # Keyboard: Tab from the top of the page reaches the task's link; Enter opens it.
        browser.get(url + "/ui/")
        loaded(browser, "list")
        link = css(browser, 'tr[data-name="nightly"] a')
        for _ in range(60):
            if browser.switch_to.active_element == link:
                break
            browser.switch_to.active_element.send_keys(Keys.TAB)
        assert browser.switch_to.active_element == link, "the task's link is not reachable with Tab"
        link.send_keys(Keys.ENTER)
        loaded(browser, "task")

    await step(list_page)

    def task_page() -> None:
        assert browser.current_url == url + "/ui/tasks/nightly"
        summary = css(browser, "#summary").text
        assert "Every hour" in summary and "backup" in summary and "Next runs" in summary
        timeline = browser.find_elements(By.CSS_SELECTOR, "#timeline li")
        assert [li.get_attribute("class") for li in timeline] == ["ok", "bad", "run", "wait"]  # oldest first
        labels = [css(li, "a").get_attribute("aria-label") for li in timeline]
        assert [label.split(": ")[1].split(",")[0] for label in labels] == ["Succeeded", "Failed", "Running", "Queued"]
        rows = {r.get_attribute("data-name"): r.text for r in browser.find_elements(By.CSS_SELECTOR, "#executions tbody tr")}
        assert "1m 1s" in rows["nightly-1"] and "BackoffLimitExceeded" in rows["nightly-2"]
        assert "PoolFull" in rows["nightly-4"]
        assert json.loads(css(browser, "#spec").text) == {"schedule": "@hourly", "template": {"image": "busybox"}}
        # ann writes team-a: the controls show; pause (not resume) for an active schedule.
        assert css(browser, "#controls").is_displayed()
        assert css(browser, '[data-op="pause"]').is_displayed() and not css(browser, '[data-op="resume"]').is_displayed()
        # Delete asks first; Cancel sends nothing.
        css(browser, '[data-op="delete"]').click()
        dialog = wait(browser, lambda d: css(d, "#confirm-delete").is_displayed() and css(d, "#confirm-delete"),
                      "the delete confirmation")
        css(dialog, 'button[value="cancel"]').click()
        wait(browser, lambda d: not css(d, "#confirm-delete").is_displayed(), "the dialog to close")
        assert css(browser, "#status").text == ""
        # No Kubernetes behind this gateway: the page shows the API's answer.
        css(browser, '[data-op="run"]').click()
        wait(browser, lambda d: "need Kubernetes access" in css(d, "#status").text, "the run-now answer")
        if SHOTS:
            browser.execute_script('document.getElementById("status").textContent = ""')
            browser.save_screenshot(str(Path(SHOTS) / "webpage-task.png"))
        # Every request the page made went to the gateway: no CDN, no font, no other origin.
        urls = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
        assert urls and all(u.startswith(url + "/") for u in urls), urls

    await step(task_page)


# --- the read-only token ------------------------------------------------------------------------


async def test_read_only_token_sees_no_write_buttons_and_a_forged_request_is_403(gw: Seeder, browser: Any) -> None:
    await seed_history(gw)
    url = gw.running.public_url

    def run() -> None:
        sign_in(browser, url + "/ui/tasks/nightly", "wrong-token-0123456789")
        wait(browser, lambda d: "did not accept" in css(d, "#sign-in-error").text, "the refusal of a wrong token")
        css(browser, "#token").send_keys(BOB)
        css(browser, "#sign-in button[type=submit]").click()
        loaded(browser, "task")
        assert css(browser, "#who").text == "Signed in as bob"
        assert not css(browser, "#controls").is_displayed()
        assert not any(b.is_displayed() for b in browser.find_elements(By.CSS_SELECTOR, "#controls button"))
        forged = fetch(browser, "POST", "/v1/tasks/nightly/pause?namespace=team-a")
        assert forged["status"] == 403 and forged["body"]["error"]["code"] == "forbidden", forged
        forged = fetch(browser, "DELETE", "/v1/tasks/nightly?namespace=team-a")
        assert forged["status"] == 403, forged
        # The same request with ann's token passes authorization (and finds no Kubernetes here).
        css(browser, "#sign-out").click()
        sign_in(browser, url + "/ui/tasks/nightly", ANN)
        loaded(browser, "task")
        assert css(browser, "#controls").is_displayed()
        allowed = fetch(browser, "POST", "/v1/tasks/nightly/pause?namespace=team-a")
        assert allowed["status"] == 503 and allowed["body"]["error"]["code"] == "kubernetes_not_configured", allowed

    await step(run)


# --- logs ------------------------------------------------------------------------------------------


async def test_a_large_log_is_read_by_pages_tail_back_top_search_download(
    gw: Seeder, browser: Any, tmp_path: Path
) -> None:
    await gw.record("nightly", kind="task", type="scheduled", schedule="@hourly")
    await gw.record("nightly-big", parent="nightly", status="Succeeded")
    data = b"".join(b"line %d of the big log\n" % i for i in range(1, 5001))
    await gw.append("nightly-big", data, ts="2026-01-15T12:00:00Z")
    await gw.finalize("nightly-big", data)
    url = gw.running.public_url

    def lines(d: Any) -> list[int]:
        return [int(x) for x in texts(d, "#rows .ln")]

    def run() -> None:
        sign_in(browser, url + "/ui/executions/nightly-big", BOB)
        loaded(browser, "execution")
        assert lines(browser) == list(range(4801, 5001))  # the tail, one page
        assert "Task nightly" == css(browser, "#task-link").text
        first_row = browser.find_elements(By.CSS_SELECTOR, "#rows tr")[0].text
        assert first_row.startswith("4801 2026-01-15 07:00:00 EST line 4801 of the big log"), first_row
        # Scrolling back fetches the page before the first row shown.
        browser.execute_script('document.getElementById("log").scrollTop = 0')
        wait(browser, lambda d: lines(d)[:1] == [4601], "the previous page")
        assert lines(browser) == list(range(4601, 5001))
        css(browser, "#log-top").click()
        wait(browser, lambda d: lines(d)[:1] == [1], "the top")
        assert lines(browser) == list(range(1, 201))
        # Search runs on the server (grep); the rows keep their line numbers.
        css(browser, "#log-grep").send_keys("line 4242 ")
        css(browser, "#log-grep").send_keys(Keys.ENTER)
        wait(browser, lambda d: lines(d) == [4242], "the search result")
        assert 'matches for "line 4242 "' in css(browser, "#log-state").text
        css(browser, "#log-clear").click()
        wait(browser, lambda d: lines(d)[-1:] == [5000] and len(lines(d)) == 200, "the tail again")
        # The page never asked for the whole log: row pages of at most 200 lines, no raw download yet.
        asked = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
        assert not [u for u in asked if "/logs/raw" in u], asked
        assert all("limit=200" in u or "tail=200" in u for u in asked if "/logs?" in u), asked
        css(browser, "#log-download").click()

    await step(run)
    target = browser.download_dir / "nightly-big.log"
    await step(wait, browser, lambda d: target.exists() and target.stat().st_size == len(data), "the download")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_follow_a_running_log_to_its_end(gw: Seeder, browser: Any) -> None:
    await gw.record("nightly", kind="task", type="scheduled", schedule="@hourly")
    await gw.record("nightly-live", parent="nightly", status="Running", start="2026-01-15T12:00:00Z")
    sent = b"line 1\nline 2\n"
    await gw.append("nightly-live", sent, ts="2026-01-15T12:00:00Z")
    url = gw.running.public_url

    def rows(d: Any) -> list[str]:
        return [r.text for r in d.find_elements(By.CSS_SELECTOR, "#rows .tx")]

    def opened() -> None:
        sign_in(browser, url + "/ui/executions/nightly-live", ANN)
        loaded(browser, "execution")
        wait(browser, lambda d: css(d, "#log-follow").is_selected(), "follow to start by itself on a streaming log")
        wait(browser, lambda d: rows(d) == ["line 1", "line 2"], "the first rows")

    await step(opened)
    # The operator's shipper appends while the page follows; a line may arrive in two parts.
    for chunk, expected in (
        (b"line 3\nline 4 is par", ["line 1", "line 2", "line 3", "line 4 is par"]),
        (b"tial\nline 5\n", ["line 1", "line 2", "line 3", "line 4 is partial", "line 5"]),
    ):
        await gw.append("nightly-live", chunk, ts="2026-01-15T12:00:05Z")
        sent += chunk
        await step(wait, browser, lambda d, e=expected: rows(d) == e, f"the rows {expected}")
    await gw.record("nightly-live", parent="nightly", status="Succeeded", end="2026-01-15T12:00:10Z")
    await gw.finalize("nightly-live", sent)

    def ended() -> None:
        wait(browser, lambda d: css(d, "body").get_attribute("data-log-state") == "complete", "the sealed log")
        wait(browser, lambda d: not css(d, "#log-follow").is_selected(), "follow to end")
        assert css(browser, "#status").text == "Log complete: 5 lines."
        wait(browser, lambda d: "Succeeded" in css(d, "#summary").text, "the summary to show the final status")
        assert "46 bytes, complete" in css(browser, "#summary").text
        assert [int(x) for x in texts(browser, "#rows .ln")] == [1, 2, 3, 4, 5]
        times = texts(browser, "#rows .ts")
        assert times[0] == "2026-01-15 07:00:00 EST" and times[-1] == "2026-01-15 07:00:05 EST", times
        if SHOTS:
            browser.save_screenshot(str(Path(SHOTS) / "webpage-execution.png"))

    await step(ended)


async def test_a_narrow_window_scrolls_tables_not_the_page(gw: Seeder, browser: Any) -> None:
    await seed_history(gw)
    url = gw.running.public_url

    def run() -> None:
        size = browser.get_window_size()
        browser.set_window_size(380, 800)
        try:
            for path, page in (("/ui/", "list"), ("/ui/tasks/nightly", "task")):
                if page == "list":
                    sign_in(browser, url + path, ANN)
                else:
                    browser.get(url + path)
                loaded(browser, page)
                overflow = browser.execute_script(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 0, (path, overflow)
        finally:
            browser.set_window_size(size["width"], size["height"])

    await step(run)
