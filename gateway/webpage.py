"""The web page for task history, served by the gateway on its public port (issue 17).

Routes (outside ``/v1``, so no token is needed to load them, and none of them holds data):

- ``GET /``                         redirects to ``/ui/``
- ``GET /ui/``                      the task list
- ``GET /ui/tasks/{name}``          one task: summary, schedule, executions timeline, spec, controls
- ``GET /ui/executions/{name}``     one execution: its log (rows, tail, search, download, follow)
- ``GET /ui/static/{file}``         the page's CSS and JavaScript, from ``gateway/web/`` (package data)

How it fits together: this module renders a small HTML shell per page (string templates, every
interpolated value escaped) and serves a fixed set of static files; the browser's JavaScript
(``web/app.js``, with its pure helpers in ``web/format.js``) then calls the ``/v1`` JSON API with
the user's token, exactly as taskctl does. The token is typed into a sign-in form and kept in the
tab's ``sessionStorage``; it is sent as ``Authorization: Bearer`` and never put in a URL. So the
page needs no session, cookie or server-side state of its own, sees exactly what the token may see
(namespace scopes are applied by the API), and shows the write controls only when ``/v1/whoami``
says the token may write in the task's namespace (the API still answers 403 otherwise).

No build step and no external requests: the files are served as written, and every answer here
carries a ``Content-Security-Policy`` that allows only this origin (no CDN, no web font, no inline
script). This module does no I/O besides reading its own package files, once, at import.
"""

from __future__ import annotations

import html
from importlib import resources
from string import Template

from aiohttp import web

from gateway.model import check_name

#: The static files, read once: name -> (content type, bytes). Only these names are served.
_TYPES = {".js": "text/javascript", ".css": "text/css"}
_STATIC: dict[str, tuple[str, bytes]] = {
    entry.name: (_TYPES[entry.name[entry.name.rindex("."):]], entry.read_bytes())
    for entry in resources.files("gateway").joinpath("web").iterdir()
    if entry.is_file() and entry.name[entry.name.rfind("."):] in _TYPES
}

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_SHELL = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · Fabric tasks</title>
<link rel="stylesheet" href="/ui/static/page.css">
<script type="module" src="/ui/static/app.js"></script>
</head>
<body data-page="$page" data-name="$name">
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <nav aria-label="Main"><a href="/ui/">Fabric tasks</a></nav>
  <span id="who"></span>
  <span id="zone" class="muted"></span>
  <button id="sign-out" type="button" hidden>Sign out</button>
</header>
<form id="sign-in" class="sign-in" hidden>
  <p>This gateway needs a user token (the one taskctl uses). It is kept in this tab only.</p>
  <label for="token">User token</label>
  <input id="token" name="token" type="password" autocomplete="off" required>
  <button type="submit">Sign in</button>
  <p id="sign-in-error" class="error" role="alert"></p>
</form>
<main id="main" tabindex="-1">
$body
</main>
<p id="status" class="status" role="status" aria-live="polite"></p>
</body>
</html>
""")

_LIST = """<h1>Tasks</h1>
<form id="filters" class="filters" role="search" aria-label="Filters">
  <label>Type <select name="type">
    <option value="">any</option><option value="scheduled">scheduled</option><option value="onetime">one-off</option>
  </select></label>
  <label>Status <input name="status" list="statuses" placeholder="Failed, Running"></label>
  <datalist id="statuses">
    <option value="Active"><option value="Paused"><option value="Pending"><option value="Queued">
    <option value="Running"><option value="Succeeded"><option value="Failed"><option value="Invalid">
  </datalist>
  <label>Skill <input name="skill"></label>
  <label>Schedule <input name="schedule" placeholder="its executions"></label>
  <label>Namespace <input name="namespace"></label>
  <label>Since <input name="since" placeholder="2h, 3d or RFC 3339"></label>
  <label>Limit <input name="limit" type="number" min="1" max="1000" placeholder="50"></label>
  <button type="submit">Apply</button>
  <button type="reset" id="clear-filters">Clear</button>
</form>
<p id="filter-error" class="error" role="alert"></p>
<div class="scroll">
<table id="tasks" class="grid">
  <caption class="sr-only">Tasks, newest first</caption>
  <thead><tr><th scope="col">Name</th><th scope="col">Namespace</th><th scope="col">Status</th>
  <th scope="col">Schedule</th><th scope="col">Last run</th><th scope="col">Next run</th><th scope="col">Skill</th></tr></thead>
  <tbody></tbody>
</table>
</div>
<p id="empty" class="muted" hidden>No tasks match.</p>
<button id="more" type="button" hidden>More</button>
"""

_TASK = """<p><a href="/ui/">All tasks</a></p>
<h1 id="title">$name</h1>
<div id="controls" class="controls" role="group" aria-label="Schedule operations" hidden>
  <button type="button" data-op="pause" hidden>Pause</button>
  <button type="button" data-op="resume" hidden>Resume</button>
  <button type="button" data-op="run">Run now</button>
  <button type="button" data-op="delete" class="danger">Delete</button>
</div>
<dialog id="confirm-delete" aria-labelledby="confirm-title">
  <form method="dialog">
    <h2 id="confirm-title">Delete task $name?</h2>
    <p>Kubernetes deletes its CronJob, Jobs and Pods. The history and logs here stay until retention.</p>
    <button value="cancel" autofocus>Cancel</button>
    <button value="delete" class="danger">Delete</button>
  </form>
</dialog>
<dl id="summary" class="summary"></dl>
<h2>Recent executions</h2>
<ol id="timeline" class="timeline" aria-label="Executions, oldest to newest"></ol>
<div class="scroll">
<table id="executions" class="grid">
  <thead><tr><th scope="col">Execution</th><th scope="col">Status</th><th scope="col">Started</th>
  <th scope="col">Duration</th><th scope="col">Reason</th></tr></thead>
  <tbody></tbody>
</table>
</div>
<p id="no-executions" class="muted" hidden>No executions yet.</p>
<h2>Spec</h2>
<pre id="spec" class="spec" tabindex="0"></pre>
"""

_EXECUTION = """<p><a id="task-link" href="/ui/">All tasks</a></p>
<h1 id="title">$name</h1>
<dl id="summary" class="summary"></dl>
<div class="logbar" role="toolbar" aria-label="Log">
  <button type="button" id="log-top">Top</button>
  <button type="button" id="log-tail">Tail</button>
  <label><input type="checkbox" id="log-follow"> Follow</label>
  <button type="button" id="log-download">Download</button>
</div>
<form id="log-search" class="logbar" role="search" aria-label="Search the log">
  <label>Search <input id="log-grep" type="search" maxlength="256"></label>
  <label><input type="checkbox" id="log-regex"> regex</label>
  <label><input type="checkbox" id="log-case"> ignore case</label>
  <button type="submit">Find</button>
  <button type="button" id="log-clear">Show all</button>
</form>
<p id="log-state" class="muted" aria-live="polite"></p>
<div id="log" class="log" tabindex="0" role="region" aria-label="Log lines">
  <table><thead class="sr-only"><tr><th>Line</th><th>Time</th><th>Text</th></tr></thead><tbody id="rows"></tbody></table>
</div>
"""


def render(page: str, title: str, body: str, name: str = "") -> str:
    """One page: the shell around ``body``; ``title`` and ``name`` are escaped here."""
    safe_name = html.escape(name)
    return _SHELL.substitute(
        title=html.escape(title), page=page, name=safe_name, body=Template(body).substitute(name=safe_name)
    )


def _page(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS)


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


async def task_list(request: web.Request) -> web.Response:
    return _page(render("list", "Tasks", _LIST))


async def task_page(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    return _page(render("task", name, _TASK, name))


async def execution_page(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "execution")
    return _page(render("execution", name, _EXECUTION, name))


async def static(request: web.Request) -> web.Response:
    found = _STATIC.get(request.match_info["file"])
    if found is None:
        raise web.HTTPNotFound()
    content_type, body = found
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", index, allow_head=False),
        web.get("/ui/", task_list, allow_head=False),
        web.get("/ui/tasks/{name}", task_page, allow_head=False),
        web.get("/ui/executions/{name}", execution_page, allow_head=False),
        web.get("/ui/static/{file}", static, allow_head=False),
    ]
