"""The web page's server side, without a browser: the HTML shells and static files it serves
(escaped, same-origin only, no token needed to load them and no data in them), the two API reads
it added (``GET /v1/whoami``, ``GET /v1/schedule``) on the real app over a real port with user
tokens, and that the static files ship as package data. The page in a browser:
``test_webpage_browser.py``."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from fakeclock import FakeClock
from webgw import ANN, BOB, USERS, Seeder, serving, settings_for

from gateway import webpage

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "gateway" / "web"
NOW = datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc)  # the day before New York's spring-forward


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Seeder]:
    async with serving(settings_for(tmp_path, USERS), clock=FakeClock(wall_start=NOW)) as seeder:
        yield seeder


async def get(gw: Seeder, path: str, token: str | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with gw.http.get(gw.running.public_url + path, headers=headers, allow_redirects=False) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body, resp.headers


@pytest.mark.parametrize(
    "token, expected",
    [
        pytest.param(ANN, {"user": "ann", "authenticated": True, "read": ["team-a"], "write": ["team-a"]}, id="writer"),
        pytest.param(BOB, {"user": "bob", "authenticated": True, "read": ["team-a", "team-b"], "write": []},
                     id="reader"),
    ],
)
async def test_whoami(gw: Seeder, token: str, expected: dict[str, Any]) -> None:
    status, body, _ = await get(gw, "/v1/whoami", token)
    assert (status, body) == (200, expected)


async def test_whoami_needs_a_token_and_is_anonymous_on_an_open_gateway(gw: Seeder, tmp_path: Path) -> None:
    status, body, headers = await get(gw, "/v1/whoami")
    assert status == 401 and "WWW-Authenticate" in headers, body
    assert (await get(gw, "/v1/whoami", "not-a-token-0123456789"))[0] == 401
    async with serving(settings_for(tmp_path / "open", None)) as open_gw:
        status, body, _ = await get(open_gw, "/v1/whoami")
        assert (status, body) == (200, {"user": "anonymous", "authenticated": False, "read": ["*"], "write": ["*"]})


@pytest.mark.parametrize(
    "query, description, next_runs",
    [
        pytest.param("cron=@hourly", "Every hour", ["2026-03-07T13:00:00.000Z"], id="hourly-one-run"),
        pytest.param("cron=0+3+*+*+*&timeZone=America/New_York&count=2", "At 03:00",
                     ["2026-03-08T07:00:00.000Z", "2026-03-09T07:00:00.000Z"], id="new-york-03:00-is-07:00z-once-on-edt"),
        pytest.param("cron=*/5+*+*+*+*&count=3", "Every 5 minutes",
                     ["2026-03-07T12:05:00.000Z", "2026-03-07T12:10:00.000Z", "2026-03-07T12:15:00.000Z"], id="every-5-min"),
    ],
)
async def test_schedule(gw: Seeder, query: str, description: str, next_runs: list[str]) -> None:
    status, body, _ = await get(gw, f"/v1/schedule?{query}", BOB)
    assert status == 200, body
    assert body["description"] == description and body["next"] == next_runs


@pytest.mark.parametrize(
    "query, fragment",
    [
        pytest.param("", "cron is required", id="no-cron"),
        pytest.param("cron=0+25+*+*+*", "cron: ", id="bad-hour"),
        pytest.param("cron=@hourly&timeZone=Mars/Olympus", "timeZone: ", id="bad-zone"),
        pytest.param("cron=@hourly&count=21", "count", id="count-too-big"),
        pytest.param("cron=@hourly&zone=UTC", "zone", id="unknown-parameter"),
    ],
)
async def test_schedule_bad_input(gw: Seeder, query: str, fragment: str) -> None:
    status, body, _ = await get(gw, f"/v1/schedule?{query}", BOB)
    assert status == 400 and fragment in body["error"]["message"], body


@pytest.mark.parametrize(
    "path, page, title",
    [
        pytest.param("/ui/", "list", "<title>Tasks", id="list"),
        pytest.param("/ui/tasks/nightly-backup", "task", "<title>nightly-backup", id="task"),
        pytest.param("/ui/executions/nightly-backup-29000000", "execution", "<title>nightly-backup-29000000",
                     id="execution"),
    ],
)
async def test_pages_need_no_token_hold_no_data_and_allow_only_this_origin(
    gw: Seeder, path: str, page: str, title: str
) -> None:
    status, html, headers = await get(gw, path)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f'data-page="{page}"' in html and title in html
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "<script>" not in html and "style=" not in html  # no inline script or style: the CSP forbids them
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith(("/", "#")), url


async def test_static_files_and_redirect(gw: Seeder) -> None:
    for name, kind in (("app.js", "text/javascript"), ("format.js", "text/javascript"), ("page.css", "text/css")):
        status, text, headers = await get(gw, f"/ui/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind), name
        assert text == (WEB / name).read_text()
    for missing in ("nope.js", "..%2Fserver.py", "%2E%2E%2Fwebpage.py"):
        assert (await get(gw, f"/ui/static/{missing}"))[0] == 404, missing
    status, _, headers = await get(gw, "/")
    assert status == 302 and headers["Location"] == "/ui/"
    status, body, _ = await get(gw, "/ui/tasks/Not_A_Name")
    assert status == 400 and body["error"]["code"] == "invalid_name", body


def test_render_escapes() -> None:
    html = webpage.render("task", "<b>x</b>", "<h1>$name</h1>", name='"><script>alert(1)</script>')
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html


def test_no_external_urls_in_the_static_files() -> None:
    for path in WEB.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", text), path.name


def test_static_files_ship_as_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["gateway"]
    for path in WEB.iterdir():
        relative = f"web/{path.name}"
        assert any(fnmatch.fnmatch(relative, g) for g in globs), relative
