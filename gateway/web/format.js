// Pure helpers of the web page: formatting and query building, no DOM, no fetch, no clock
// (callers pass "now" and the time zone). Table-tested in a real browser by
// tests/unit/test_webpage_browser.py::test_format_helpers.

/** The list filters the page offers, as `taskctl list` has them; each maps to /v1/tasks parameters. */
export const LIST_FILTERS = ["type", "status", "skill", "schedule", "namespace", "since", "limit"];

const STATUSES = ["Pending", "Queued", "Running", "Succeeded", "Failed", "Active", "Paused", "Invalid"];
const SINCE = /^(\d+)\s*(s|m|h|d|w)$/;
const UNIT_MS = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 };

/** "paused" or "PAUSED" -> "Paused"; an unknown status throws, naming the known ones (as taskctl). */
export function normalizeStatus(value) {
  const found = STATUSES.find((s) => s.toLowerCase() === value.trim().toLowerCase());
  if (!found) throw new Error(`unknown status "${value.trim()}": one of ${STATUSES.join(", ")}`);
  return found;
}

/** "2h" (10s, 5m, 3d, 1w) -> the RFC 3339 time that long before nowMs; an RFC 3339 time is kept. */
export function sinceTime(value, nowMs) {
  const text = value.trim();
  const m = SINCE.exec(text);
  if (m) return new Date(nowMs - Number(m[1]) * UNIT_MS[m[2]]).toISOString().replace(".000Z", "Z");
  if (/^\d{4}-\d\d-\d\dT/.test(text) && !Number.isNaN(Date.parse(text))) return text;
  throw new Error(`since "${text}": a duration (10m, 2h, 3d) or an RFC 3339 time`);
}

/**
 * The /v1/tasks query string for the page's filters ({type, status, skill, ...}, strings as typed).
 * Comma-separated values repeat the parameter (OR), as `taskctl list --status a,b` does. Without a
 * schedule the list holds tasks; with one, that schedule's executions.
 */
export function listQuery(filters, nowMs) {
  const q = new URLSearchParams();
  const values = (key) => (filters[key] || "").split(",").map((v) => v.trim()).filter(Boolean);
  q.append("kind", values("schedule").length ? "execution" : "task");
  for (const key of ["type", "status", "skill", "schedule", "namespace"]) {
    for (const v of values(key)) q.append(key, key === "status" ? normalizeStatus(v) : v);
  }
  if ((filters.since || "").trim()) q.append("since", sinceTime(filters.since, nowMs));
  if ((filters.limit || "").trim()) q.append("limit", String(Number(filters.limit)));
  return q.toString();
}

/** 59 -> "59s", 61 -> "1m 1s", 3600 -> "1h", 90061 -> "1d 1h"; null/undefined -> "". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  let s = Math.max(0, Math.round(seconds));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    if (s >= size || (unit === "s" && parts.length === 0)) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  return parts.slice(0, 2).filter((p, i) => i === 0 || !p.startsWith("0")).join(" ");
}

/** Seconds between two RFC 3339 times (end missing: until nowMs); null without a start. */
export function durationSeconds(start, end, nowMs) {
  if (!start) return null;
  const to = end ? Date.parse(end) : nowMs;
  return Math.max(0, (to - Date.parse(start)) / 1000);
}

/** An RFC 3339 time as "2026-12-06 21:05:03 CET" in timeZone (the viewer's, by default). */
export function formatTime(iso, timeZone) {
  if (!iso) return "";
  const parts = {};
  const fmt = new Intl.DateTimeFormat("en-US", {
    timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23", timeZoneName: "short",
  });
  for (const p of fmt.formatToParts(new Date(iso))) parts[p.type] = p.value;
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second} ${parts.timeZoneName}`;
}

/** "in 5m", "3h ago", "just now": iso relative to nowMs, two units at most. */
export function relativeTime(iso, nowMs) {
  if (!iso) return "";
  const delta = (Date.parse(iso) - nowMs) / 1000;
  if (Math.abs(delta) < 1) return "just now";
  const text = formatDuration(Math.abs(delta));
  return delta > 0 ? `in ${text}` : `${text} ago`;
}

/** How a status looks: a CSS class for its colour and the word shown with it (never colour alone). */
export function outcome(status, paused) {
  if (paused) return { cls: "off", label: "PAUSED" };
  const cls = {
    Succeeded: "ok", Failed: "bad", Invalid: "bad", Running: "run", Active: "run",
    Pending: "wait", Queued: "wait", Paused: "off",
  }[status] || "unknown";
  return { cls, label: status === "Paused" ? "PAUSED" : (status || "unknown") };
}

/** A task record is a schedule if its type says so or it has a cron (as taskctl decides). */
export function isScheduled(rec) {
  return rec.type === "scheduled" || Boolean(rec.schedule || (rec.spec && rec.spec.schedule));
}

/** Paused: the spec is suspended or the operator reported the status Paused. */
export function isPaused(rec) {
  return Boolean((rec.spec && rec.spec.suspend) || (rec.status || "").toLowerCase() === "paused");
}

/** Whether /v1/whoami's answer may write (pause, resume, run, delete) in namespace. */
export function mayWrite(who, namespace) {
  if (!who) return false;
  return who.write.includes("*") || who.write.includes(namespace);
}

/** "Queued (#2 in gpu)" when a queue place is known, else the reason alone. */
export function queueText(rec) {
  const q = rec.queue;
  const reason = rec.statusReason || "";
  if (rec.status !== "Queued" || !q || typeof q.position !== "number") return reason;
  return `${reason ? reason + " " : ""}(#${q.position}${q.pool ? " in " + q.pool : ""})`;
}

/**
 * The rows window after a page of rows arrives: merged by line number (a row already shown is
 * replaced: the last line of a growing log may have been partial), sorted, and cut to at most max
 * rows, dropping from the end away from where the rows were added ("end": drop the oldest).
 */
export function mergeRows(current, incoming, where, max) {
  const byLine = new Map(current.map((r) => [r.line, r]));
  for (const r of incoming) byLine.set(r.line, r);
  const rows = [...byLine.values()].sort((a, b) => a.line - b.line);
  if (rows.length <= max) return rows;
  return where === "start" ? rows.slice(0, max) : rows.slice(rows.length - max);
}

/**
 * The /v1/tasks/{execution}/logs query for a move of the log view:
 * top (from line 1), tail (the last rows), back (before the first shown), forward (after the last
 * shown), refresh (again from the last shown line, which may have grown). search: {grep, regex, ignoreCase}.
 */
export function rowsQuery(move, { first = 0, last = 0, page = 200, search = null } = {}) {
  const q = new URLSearchParams();
  if (move === "top") q.append("limit", page);
  else if (move === "tail") q.append("tail", page);
  else if (move === "back") { q.append("before", first); q.append("tail", page); }
  else if (move === "forward") { q.append("after", last); q.append("limit", page); }
  else if (move === "refresh") { q.append("after", Math.max(0, last - 1)); q.append("limit", page); }
  else throw new Error(`unknown move ${move}`);
  if (search && search.grep) {
    q.append("grep", search.grep);
    if (search.regex) q.append("regex", "true");
    if (search.ignoreCase) q.append("ignoreCase", "true");
  }
  return q.toString();
}
