// The web page's behaviour: calls the /v1 JSON API with the user's token and fills the server's
// HTML shell (gateway/webpage.py). Pure logic lives in format.js; this file owns the DOM, fetch
// and the token. The token is kept in sessionStorage (this tab only), sent as
// "Authorization: Bearer", and never put in a URL.

import {
  LIST_FILTERS, durationSeconds, formatDuration, formatTime, isPaused, isScheduled, listQuery,
  mayWrite, mergeRows, outcome, queueText, relativeTime, rowsQuery,
} from "./format.js";

const TOKEN_KEY = "fabric-task-token";
const LOG_PAGE = 200;        // rows per log request
const LOG_WINDOW = 2000;     // rows kept on the page at most: a 1 GiB log is never loaded whole
const EDGE_PX = 150;         // scrolling this close to an edge fetches the next rows
const $ = (sel, root = document) => root.querySelector(sel);
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
const when = (iso) => (iso ? `${formatTime(iso, zone)} (${relativeTime(iso, Date.now())})` : "");

class SignInNeeded extends Error {}

// --- the API ---------------------------------------------------------------------------------

async function call(path, { method = "GET", signal } = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const resp = await fetch(path, { method, headers, signal, cache: "no-store" });
  if (resp.status === 401) {
    showSignIn(token ? "The gateway did not accept this token." : "");
    throw new SignInNeeded("sign in first");
  }
  return resp;
}

async function api(path, opts) {
  const resp = await call(path, opts);
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error ? body.error.message : `HTTP ${resp.status}`);
  return body;
}

const enc = encodeURIComponent;
let whoCache = null;
async function whoami() {
  if (!whoCache) whoCache = await api("/v1/whoami");
  return whoCache;
}

const schedules = new Map();
/** The schedule in words and its next runs, from the gateway (cached per cron and zone). */
function schedule(cron, timeZone, count = 1) {
  const key = `${cron}\n${timeZone || ""}\n${count}`;
  if (!schedules.has(key)) {
    const q = new URLSearchParams({ cron, count });
    if (timeZone) q.append("timeZone", timeZone);
    schedules.set(key, api(`/v1/schedule?${q}`).catch(() => null));
  }
  return schedules.get(key);
}

// --- page frame --------------------------------------------------------------------------------

function status(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function fail(err) {
  if (!(err instanceof SignInNeeded)) status(err.message, true);
}

function showSignIn(message) {
  const form = $("#sign-in");
  form.hidden = false;
  $("#main").hidden = true;
  $("#sign-in-error").textContent = message;
  $("#token").focus();
}

function setUpFrame(start) {
  $("#zone").textContent = `Times in ${zone}`;
  $("#sign-in").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    $("#token").value = "";
    $("#sign-in").hidden = true;
    $("#main").hidden = false;
    whoCache = null;
    start();
  });
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
}

async function showWho() {
  const who = await whoami();
  $("#who").textContent = who.authenticated ? `Signed in as ${who.user}` : "Open gateway (no user tokens)";
  $("#sign-out").hidden = !who.authenticated;
  return who;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function badge(status, paused = false) {
  const o = outcome(status, paused);
  return el("span", { class: `badge ${o.cls}`, text: o.label });
}

function fillSummary(dl, pairs) {
  dl.replaceChildren();
  for (const [term, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    dl.append(el("dt", { text: term }), el("dd", {}, value));
  }
}

// --- the task list -----------------------------------------------------------------------------

function listPage() {
  const form = $("#filters");
  const params = new URLSearchParams(location.search);
  for (const key of LIST_FILTERS) form.elements[key].value = params.get(key) || "";
  let cursor = null;
  let query = "";

  async function load(more) {
    $("#filter-error").textContent = "";
    if (!more) {
      try {
        const filters = Object.fromEntries(LIST_FILTERS.map((k) => [k, form.elements[k].value]));
        query = listQuery(filters, Date.now());
      } catch (err) {
        $("#filter-error").textContent = err.message;
        return;
      }
    }
    const page = await api(`/v1/tasks?${query}${more ? `&cursor=${enc(cursor)}` : ""}`);
    const body = $("#tasks tbody");
    if (!more) body.replaceChildren();
    for (const rec of page.items) body.append(taskRow(rec));
    cursor = page.nextCursor;
    $("#more").hidden = !cursor;
    $("#empty").hidden = body.children.length > 0;
    document.body.dataset.loaded = "list";
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const shown = new URLSearchParams();
    for (const key of LIST_FILTERS) if (form.elements[key].value) shown.append(key, form.elements[key].value);
    history.replaceState(null, "", `?${shown}`);
    delete document.body.dataset.loaded;
    load(false).catch(fail);
  });
  form.addEventListener("reset", () => setTimeout(() => form.requestSubmit(), 0));
  $("#more").addEventListener("click", () => load(true).catch(fail));
  return () => showWho().then(() => load(false)).catch(fail);
}

function taskRow(rec) {
  const href = rec.kind === "execution" ? `/ui/executions/${enc(rec.name)}` : `/ui/tasks/${enc(rec.name)}`;
  const scheduled = isScheduled(rec);
  const paused = isPaused(rec);
  const next = el("td", { "data-col": "next" });
  const sched = el("td", { "data-col": "schedule" });
  if (scheduled && rec.schedule) {
    sched.append(el("span", { class: "sched", text: "scheduled" }), " ",
      el("code", { text: rec.schedule }));
    if (paused) next.textContent = "none while paused";
    schedule(rec.schedule, null).then((s) => {
      if (!s) return;
      sched.append(el("div", { class: "muted", text: s.description }));
      if (!paused && s.next.length) next.textContent = when(s.next[0]);
    });
  } else {
    sched.textContent = rec.kind === "execution" ? `of ${rec.parent || "?"}` : "one-off";
  }
  return el("tr", { "data-name": rec.name },
    el("th", { scope: "row" }, el("a", { href, text: rec.name })),
    el("td", { text: rec.namespace || "" }),
    el("td", { "data-col": "status" }, badge(rec.status, scheduled && paused)),
    sched,
    el("td", { "data-col": "last", text: when(rec.start) }),
    next,
    el("td", { text: rec.skillName || "" }),
  );
}

// --- one task ------------------------------------------------------------------------------------

function taskPage(name) {
  let rec = null;

  async function load() {
    const [who, task, execs] = await Promise.all([
      showWho(),
      api(`/v1/tasks/${enc(name)}`),
      api(`/v1/tasks/${enc(name)}/executions?limit=50`).catch(() => ({ items: [] })),
    ]);
    rec = task;
    const scheduled = isScheduled(rec);
    const paused = isPaused(rec);
    const spec = rec.spec || {};
    const cron = rec.schedule || spec.schedule;
    const tz = spec.timeZone || null;
    const sched = cron ? await schedule(cron, tz, 5) : null;
    fillSummary($("#summary"), [
      ["Status", el("span", {}, badge(rec.status, scheduled && paused), " ", rec.statusReason || "")],
      ["Namespace", rec.namespace],
      ["Kind", scheduled ? "scheduled" : "one-off"],
      ["Schedule", cron ? `${cron}${tz ? ` (${tz})` : ""}${sched ? ` — ${sched.description}` : ""}` : ""],
      ["Next runs", scheduled ? (paused ? "none while paused" : (sched ? sched.next.map(when).join("\n") : "")) : ""],
      ["Skill", rec.skillName && `${rec.skillName}${rec.actionName ? " / " + rec.actionName : ""}`],
      ["Project", rec.projectId],
      ["User", rec.user],
      ["Activation", rec.activationId],
      ["Created", when(rec.created)],
      ["Last run", when(rec.start)],
    ]);
    $("#spec").textContent = JSON.stringify(spec, null, 2);
    const controls = $("#controls");
    controls.hidden = !mayWrite(who, rec.namespace);
    $('[data-op="pause"]', controls).hidden = !scheduled || paused;
    $('[data-op="resume"]', controls).hidden = !scheduled || !paused;
    showExecutions(execs.items);
    document.body.dataset.loaded = "task";
  }

  async function operate(op) {
    const ns = `?namespace=${enc(rec.namespace)}`;
    const method = op === "delete" ? "DELETE" : "POST";
    const path = op === "delete" ? `/v1/tasks/${enc(name)}${ns}` : `/v1/tasks/${enc(name)}/${op}${ns}`;
    const resp = await call(path, { method });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error ? body.error.message : `HTTP ${resp.status}`);
    status(body.message);
    if (op === "pause" || op === "resume") {  // the record follows when the operator reports; show it now
      rec.spec = { ...(rec.spec || {}), suspend: op === "pause" };
      $('[data-op="pause"]').hidden = op === "pause";
      $('[data-op="resume"]').hidden = op === "resume";
      (op === "pause" ? $('[data-op="resume"]') : $('[data-op="pause"]')).focus();
    }
  }

  $("#controls").addEventListener("click", (ev) => {
    const op = ev.target.dataset.op;
    if (!op) return;
    if (op === "delete") {
      $("#confirm-delete").showModal();
      return;
    }
    operate(op).catch(fail);
  });
  $("#confirm-delete").addEventListener("close", () => {
    if ($("#confirm-delete").returnValue === "delete") operate("delete").catch(fail);
  });
  return () => load().catch(fail);
}

function showExecutions(items) {
  const timeline = $("#timeline");
  const body = $("#executions tbody");
  timeline.replaceChildren();
  body.replaceChildren();
  $("#no-executions").hidden = items.length > 0;
  for (const e of [...items].reverse()) {  // the timeline reads left to right, oldest first
    const o = outcome(e.status);
    const label = `${e.name}: ${o.label}${e.start ? ", started " + formatTime(e.start, zone) : ""}`;
    timeline.append(el("li", { class: o.cls },
      el("a", { href: `/ui/executions/${enc(e.name)}`, title: label, "aria-label": label, text: o.label.slice(0, 1) })));
  }
  for (const e of items) {
    const reason = e.status === "Queued" ? queueText(e) : (e.statusReason || "");
    const invoke = e.invoke && typeof e.invoke === "object"
      ? Object.entries(e.invoke).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ")
      : "";
    body.append(el("tr", { "data-name": e.name },
      el("th", { scope: "row" }, el("a", { href: `/ui/executions/${enc(e.name)}`, text: e.name })),
      el("td", {}, badge(e.status)),
      el("td", { text: when(e.start) }),
      el("td", { text: formatDuration(durationSeconds(e.start, e.end, Date.now())) }),
      el("td", { text: [reason, invoke, e.activationId ? `activation ${e.activationId}` : ""].filter(Boolean).join("; ") }),
    ));
  }
}

// --- one execution -------------------------------------------------------------------------------

function executionPage(name) {
  const box = $("#log");
  const tbody = $("#rows");
  const base = `/v1/tasks/${enc(name)}/logs`;
  let rows = [];          // the rows shown, by line (mergeRows keeps at most LOG_WINDOW)
  let total = 0;          // lines in the log when last asked
  let search = null;      // {grep, regex, ignoreCase} while searching
  let hasMoreAfter = false;
  let busy = false;
  let follow = null;      // AbortController of the follow stream

  function render(state) {
    tbody.replaceChildren(...rows.map((r) => el("tr", { "data-line": r.line },
      el("td", { class: "ln", text: r.line }),
      el("td", { class: "ts", text: r.ts ? formatTime(r.ts, zone) : "", title: r.ts || "" }),
      el("td", { class: "tx", text: r.text + (r.truncated ? " …[truncated]" : "") }))));
    const shown = rows.length ? `lines ${rows[0].line}–${rows[rows.length - 1].line}` : "no lines";
    const what = search ? `matches for "${search.grep}": ${shown}` : `${shown} of ${total}`;
    $("#log-state").textContent = `${what} · log ${state}${follow ? " · following" : ""}`;
    document.body.dataset.logState = state;
    document.body.dataset.lastLine = rows.length ? rows[rows.length - 1].line : 0;
  }

  async function fetchRows(move, where, replace = false) {
    const first = rows.length ? rows[0].line : 0;
    const last = rows.length ? rows[rows.length - 1].line : 0;
    const page = await api(`${base}?${rowsQuery(move, { first, last, page: LOG_PAGE, search })}`);
    total = page.totalLines;
    rows = mergeRows(replace ? [] : rows, page.rows, where, LOG_WINDOW);
    if (where === "end") hasMoreAfter = page.hasMore;
    render(page.logState);
    return page;
  }

  async function move(kind) {
    if (busy) return;
    busy = true;
    try {
      if (kind === "top") {
        await fetchRows("top", "start", true);
        box.scrollTop = 0;
      } else if (kind === "tail") {
        await fetchRows("tail", "end", true);
        box.scrollTop = box.scrollHeight;
      } else if (kind === "back" && rows.length && (rows[0].line > 1)) {
        const height = box.scrollHeight;
        const page = await fetchRows("back", "start");
        if (page.rows.length) box.scrollTop += box.scrollHeight - height;  // keep the rows in view still
      } else if (kind === "forward" && rows.length && (hasMoreAfter || rows[rows.length - 1].line < total)) {
        await fetchRows("forward", "end");
      }
    } finally {
      busy = false;
    }
  }

  box.addEventListener("scroll", () => {
    if (box.scrollTop < EDGE_PX) move("back").catch(fail);
    else if (box.scrollHeight - box.scrollTop - box.clientHeight < EDGE_PX && !follow) move("forward").catch(fail);
  });
  box.addEventListener("keydown", (ev) => {
    if (ev.key === "Home" && ev.ctrlKey) move("top").catch(fail);
    if (ev.key === "End" && ev.ctrlKey) move("tail").catch(fail);
  });
  $("#log-top").addEventListener("click", () => move("top").catch(fail));
  $("#log-tail").addEventListener("click", () => move("tail").catch(fail));
  $("#log-search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const grep = $("#log-grep").value;
    search = grep ? { grep, regex: $("#log-regex").checked, ignoreCase: $("#log-case").checked } : null;
    move("top").catch(fail);
  });
  $("#log-clear").addEventListener("click", () => {
    search = null;
    $("#log-grep").value = "";
    move("tail").catch(fail);
  });
  $("#log-download").addEventListener("click", () => download().catch(fail));
  $("#log-follow").addEventListener("change", (ev) => {
    if (ev.target.checked) startFollow().catch(fail);
    else stopFollow();
  });

  async function download() {
    const resp = await call(`${base}/raw`);
    if (!resp.ok) throw new Error((await resp.json()).error.message);
    const url = URL.createObjectURL(await resp.blob());
    const a = el("a", { href: url, download: `${name}.log` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function stopFollow() {
    if (follow) follow.abort();
    follow = null;
    $("#log-follow").checked = false;
  }

  /**
   * Live follow: the gateway's /logs/follow stream says when bytes arrive (it follows the stored
   * log, so it works the same before, during and after the pod); each arrival fetches the new rows
   * (with their line numbers and timestamps) after the last one shown. The stream ends once the log
   * is sealed; any other end (idle timeout, gateway restart) resumes at the byte offset reached.
   */
  async function startFollow() {
    stopFollow();
    search = null;
    $("#log-grep").value = "";
    follow = new AbortController();
    $("#log-follow").checked = true;
    const mine = follow;
    const rec = await api(`/v1/tasks/${enc(name)}`);
    let offset = rec.logSize || 0;
    await fetchRows("tail", "end", true);
    box.scrollTop = box.scrollHeight;
    let pending = Promise.resolve();
    let queued = false;   // a refresh is waiting to start: later chunks need no other one
    const refresh = () => {
      if (queued) return pending;
      queued = true;
      pending = pending.then(async () => {
        queued = false;
        let page;
        do {
          page = await fetchRows("refresh", "end");
        } while (page.hasMore && follow === mine);
        box.scrollTop = box.scrollHeight;
        return page;
      });
      return pending;
    };
    while (follow === mine) {
      let resp;
      try {
        resp = await call(`${base}/follow?offset=${offset}`, { signal: mine.signal });
        if (!resp.ok) throw new Error((await resp.json()).error.message);
        const reader = resp.body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          offset += value.length;
          refresh().catch(fail);
        }
      } catch (err) {
        if (follow !== mine) return;
        throw err;
      }
      const page = await refresh();
      if (page.logState === "complete" || page.logState === "lost") {
        follow = null;
        $("#log-follow").checked = false;
        render(page.logState);
        status(`Log ${page.logState}: ${page.totalLines} lines.`);
        await summary();
        return;
      }
    }
  }

  /** The execution's record, drawn; again when a followed log ends (the status has moved on). */
  async function summary() {
    const rec = await api(`/v1/tasks/${enc(name)}`);
    if (rec.parent) {
      $("#task-link").href = `/ui/tasks/${enc(rec.parent)}`;
      $("#task-link").textContent = `Task ${rec.parent}`;
    }
    const invoke = rec.invoke && typeof rec.invoke === "object" ? JSON.stringify(rec.invoke) : rec.invoke;
    fillSummary($("#summary"), [
      ["Status", el("span", {}, badge(rec.status), " ", rec.status === "Queued" ? queueText(rec) : (rec.statusReason || ""))],
      ["Namespace", rec.namespace],
      ["Started", when(rec.start)],
      ["Finished", when(rec.end)],
      ["Duration", formatDuration(durationSeconds(rec.start, rec.end, Date.now()))],
      ["Invoke", invoke],
      ["Activation", rec.activationId],
      ["Log", rec.logSize !== undefined && rec.logSize !== null ? `${rec.logSize} bytes, ${rec.logState || "none"}` : ""],
    ]);
    return rec;
  }

  async function load() {
    await showWho();
    const rec = await summary();
    await move("tail");
    document.body.dataset.loaded = "execution";
    if (rec.logState === "streaming") startFollow().catch(fail);
  }
  return () => load().catch(fail);
}

// --- start ------------------------------------------------------------------------------------

const page = document.body.dataset.page;
const name = document.body.dataset.name;
const start = { list: listPage, task: () => taskPage(name), execution: () => executionPage(name) }[page]();
setUpFrame(start);
start();
