"""Pure: views -> text, for every output format.

``table`` is the design's boxed table (Name, Skill Name, Action Name, Status, Started, Schedule);
``wide`` adds columns; ``json``/``yaml`` print ``views.task_json``/``execution_json`` (a list for
list verbs, an object for one task); ``name`` prints one name a line, for scripts and completion.
``describe_sheet`` is the ``kubectl describe``-like page of one task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence
from zoneinfo import ZoneInfo

import yaml

from controller.model import describe as describe_schedule
from controller.model import parse_time

from .humanize import duration, relative, size, timestamp
from .table import Styled, paint, render, text_width
from .views import ExecutionView, TaskView, execution_json, styled_status, task_json


LABEL_WIDTH = 20


@dataclass(frozen=True)
class Style:
    """How to draw: colour, the width to fit, box or ASCII lines; ``now`` for relative times."""

    now: datetime
    color: bool = False
    width: int | None = None
    ascii: bool = False


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _schedule_cell(t: TaskView) -> Styled:
    return Styled(t.schedule, "magenta") if t.scheduled and t.schedule else Styled("one-off", "dim")


def tasks(views: Sequence[TaskView], fmt: str, style: Style, *, all_namespaces: bool = False) -> str:
    if fmt == "name":
        return "".join(f"{v.name}\n" for v in views)
    if fmt in ("json", "yaml"):
        return dump([task_json(v) for v in views], fmt)
    wide = fmt == "wide"
    headers = ["Name", "Skill Name", "Action Name", "Status", "Started", "Schedule"]
    if wide:
        headers += ["Last Run", "Next Run", "Project", "Reason"]
    if all_namespaces:
        headers.insert(0, "Namespace")
    rows = []
    for v in views:
        row: list[Any] = [v.name, v.skill or "", v.action or "", styled_status(v.status),
                          relative(v.started, style.now), _schedule_cell(v)]
        if wide:
            row += [relative(v.last_run, style.now), relative(v.next_run, style.now), v.project or "",
                    v.reason or ""]
        if all_namespaces:
            row.insert(0, v.namespace or "")
        rows.append(row)
    return render(headers, rows, color=style.color, max_width=style.width, ascii=style.ascii)


def executions(views: Sequence[ExecutionView], fmt: str, style: Style) -> str:
    if fmt == "name":
        return "".join(f"{v.name}\n" for v in views)
    if fmt in ("json", "yaml"):
        return dump([execution_json(v) for v in views], fmt)
    wide = fmt == "wide"
    headers = ["Execution", "Status", "Reason", "Started", "Duration", "Log Size"]
    if wide:
        headers += ["Scheduled", "Finished", "Exit Code", "Log State", "Message"]
    rows = []
    for e in views:
        row: list[Any] = [
            e.name + (" (manual)" if e.manual else ""),
            styled_status(e.status),
            e.reason or "",
            relative(e.started, style.now),
            duration(e.started, e.finished, None if e.terminal else style.now),
            size(e.log_size),
        ]
        if wide:
            row += [timestamp(e.scheduled), timestamp(e.finished),
                    "" if e.exit_code is None else str(e.exit_code), e.log_state or "", e.message or ""]
        rows.append(row)
    return render(headers, rows, color=style.color, max_width=style.width, ascii=style.ascii)


def activations(views: Sequence[ExecutionView], fmt: str, style: Style) -> str:
    """``agents list-activations``: one row per agent invocation a schedule made (executions
    without an invoke outcome yet, running or not an invoke run, show ``-``)."""
    if fmt == "name":  # the execution names, as for every list verb (scripts pass them to logs/rerun)
        return "".join(f"{v.name}\n" for v in views)
    if fmt in ("json", "yaml"):
        return dump([_activation_json(v) for v in views], fmt)
    wide = fmt == "wide"
    headers = ["Activation", "Agent", "Invoke Status", "Started", "Duration", "Schedule", "Execution"]
    if wide:
        headers += ["HTTP", "Run Status", "Error"]
    rows = []
    for e in views:
        inv = e.invoke
        row: list[Any] = [
            (inv.activation_id if inv else None) or "-",
            inv.agent if inv else "-",
            styled_status(inv.status if inv else (None if e.terminal else e.status)),
            relative(e.started, style.now),
            duration(e.started, e.finished, None if e.terminal else style.now),
            e.task or "",
            e.name + (" (manual)" if e.manual else ""),
        ]
        if wide:
            row += ["" if not inv or inv.http_status is None else str(inv.http_status), styled_status(e.status),
                    (inv.error if inv else None) or ""]
        rows.append(row)
    return render(headers, rows, color=style.color, max_width=style.width, ascii=style.ascii)


def _activation_json(e: ExecutionView) -> dict[str, Any]:
    inv = e.invoke
    base = execution_json(e)
    return {
        "activationId": inv.activation_id if inv else None,
        "agent": inv.agent if inv else None,
        "invokeStatus": inv.status if inv else None,
        "httpStatus": inv.http_status if inv else None,
        "error": inv.error if inv else None,
        "start": base["start"],
        "durationSeconds": base["durationSeconds"],
        "schedule": e.task,
        "execution": e.name,
        "status": e.status,
    }


# --- describe --------------------------------------------------------------------------------------


def _columns(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Plain aligned columns (kubectl describe's sub-tables)."""
    widths = [text_width(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], text_width(cell))
    lines = []
    for row in [list(headers), ["-" * w for w in widths], *rows]:
        cells = [c + " " * (w - text_width(c)) for c, w in zip(row, widths)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _when(when: datetime | None, now: datetime, zone: str | None = None) -> str:
    if when is None:
        return "never"
    text = f"{timestamp(when)} ({relative(when, now)})"
    if zone:
        try:
            local = when.astimezone(ZoneInfo(zone))
            text = f"{timestamp(when)} = {local:%Y-%m-%d %H:%M} {zone} ({relative(when, now)})"
        except Exception:  # noqa: BLE001 - an unknown zone just shows UTC
            pass
    return text


def describe_sheet(t: TaskView, next_runs: list[datetime], style: Style, *, schedule_error: str | None = None) -> str:
    now = style.now
    lines: list[str] = []

    def field(label: str, value: Any, *more: str) -> None:
        text = "" if value is None else str(value)
        head = label + ":"
        lines.append((paint(head, "bold", style.color) + " " * max(1, LABEL_WIDTH - len(head)) + text).rstrip())
        for extra in more:
            lines.append(" " * LABEL_WIDTH + extra)

    status = styled_status(t.status)
    status_text = paint(status.text, status.style, style.color)
    if t.reason:
        status_text += f"  ({t.reason}{': ' + t.message if t.message else ''})"
    field("Name", t.name)
    field("Namespace", t.namespace)
    field("Type", "scheduled" if t.scheduled else "one-off")
    field("Status", status_text)
    field("Skill", t.skill)
    field("Action", t.action)
    if t.scheduled:
        description = t.description or _describe(t.schedule, t.time_zone)
        field("Schedule", t.schedule, description)
        field("Time Zone", t.time_zone or "UTC (default)")
        field("Suspended", "yes: the schedule is paused; resume with: taskctl resume " + t.name if t.suspended else "no")
        if schedule_error:
            field("Next Runs", f"none: {schedule_error}")
        elif t.suspended:
            field("Next Runs", "none while paused")
        elif next_runs:
            first, *rest = [_when(r, now, t.time_zone) for r in next_runs]
            field("Next Runs", first, *rest)
        field("Last Run", _when(t.last_run, now))
        field("Last Success", _when(t.last_success, now))
        field("Concurrency", t.concurrency or "Allow")
        field("Missed Runs", "unknown" if t.missed_runs is None else t.missed_runs)
        if t.starting_deadline is not None:
            field("Starting Deadline", f"{t.starting_deadline}s")
        ok, failed = t.history_limits
        if ok is not None or failed is not None:
            field("Jobs Kept", f"{3 if ok is None else ok} succeeded, {1 if failed is None else failed} failed")
    else:
        field("Started", _when(t.started, now) if t.started else "not yet")
        if t.finished:
            field("Finished", _when(t.finished, now))
    if t.priority:
        field("Priority", t.priority)
    if t.skill_concurrency == "Forbid":
        field("Skill Concurrency", "Forbid: one execution of this skill at a time; the next waits Queued")
    if t.backoff_limit is not None:
        field("Retries", t.backoff_limit)
    if t.active_deadline is not None:
        field("Deadline", f"{t.active_deadline}s per execution")
    for label, value in (("Project", t.project), ("User", t.user), ("Source", t.source),
                         ("Activation", t.activation_id), ("Channel", t.channel_id), ("Ref", t.ref_id),
                         ("Task Pool", t.task_pool)):
        if value:
            field(label, value)
    field("Created", _when(t.created, now) if t.created else "")
    if t.payload is not None:
        field("Payload", json.dumps(t.payload, ensure_ascii=False, separators=(",", ":")))
    template = t.template or {}
    if template.get("image"):
        field("Image", template["image"])
    if template.get("command") or template.get("args"):
        field("Command", " ".join([*(template.get("command") or []), *(template.get("args") or [])]))
    if template.get("podSpec"):
        images = [c.get("image", "") for c in template["podSpec"].get("containers") or []]
        field("Pod Spec", f"{len(images)} container(s): {', '.join(images)}")
    last_invoke = next((e for e in t.executions if e.invoke), None)
    if last_invoke is not None and last_invoke.invoke is not None:
        field("Last Invoke", _invoke_text(last_invoke.invoke) + f" (execution {last_invoke.name})")
    if t.conditions:
        lines.append(paint("Conditions:", "bold", style.color))
        lines += _columns(["Type", "Status", "Reason", "Message"],
                          [[c.get("type") or "", c.get("status") or "", c.get("reason") or "",
                            c.get("message") or ""] for c in t.conditions])
    lines.append(paint("Executions:", "bold", style.color) + ("" if t.executions else "  none yet"))
    if t.executions:
        rows = []
        for e in t.executions:
            st = styled_status(e.status)
            rows.append([e.name + (" (manual)" if e.manual else ""), paint(st.text, st.style, style.color),
                         _reason_with_queue(e), relative(e.started, now),
                         duration(e.started, e.finished, None if e.terminal else now),
                         "" if e.exit_code is None else str(e.exit_code), size(e.log_size)])
        lines += _columns(["Name", "Status", "Reason", "Started", "Duration", "Exit", "Log"], rows)
    if t.events:
        lines.append(paint("Events:", "bold", style.color))
        rows = []
        for ev in t.events:
            when = parse_time(ev.get("time"))
            count = ev.get("count") or 1
            rows.append([ev.get("type") or "", ev.get("reason") or "",
                         relative(when, now) + (f" (x{count})" if count > 1 else ""), ev.get("message") or ""])
        lines += _columns(["Type", "Reason", "Age", "Message"], rows)
    return "\n".join(lines) + "\n"


def _describe(schedule: str | None, zone: str | None) -> str:
    if not schedule:
        return ""
    text = describe_schedule(schedule)
    return f"{text} ({zone})" if zone else text


def describe(t: TaskView, fmt: str, style: Style, next_runs: list[datetime], schedule_error: str | None = None) -> str:
    if fmt == "name":
        return f"{t.name}\n"
    if fmt in ("json", "yaml"):
        return dump(task_json(t, detail=True, next_runs=next_runs), fmt)
    return describe_sheet(t, next_runs, style, schedule_error=schedule_error)


def message(ok: bool, text: str, fmt: str, **extra: Any) -> str:
    """The answer of a write verb: the design's ``{"success":true,"message":...}`` in json/yaml."""
    if fmt in ("json", "yaml"):
        body = {"success": ok, "message": text, **extra}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n" if fmt == "json" else dump(body, "yaml")
    return text + "\n"


def _invoke_text(inv: Any) -> str:
    """``Succeeded: agent hubble_agent, activation act-42, HTTP 200`` (and the error, if any)."""
    parts = [f"agent {inv.agent}", f"activation {inv.activation_id or 'none'}"]
    if inv.http_status is not None:
        parts.append(f"HTTP {inv.http_status}")
    text = f"{inv.status}: {', '.join(parts)}"
    return f"{text}: {inv.error}" if inv.error else text


def _reason_with_queue(e: ExecutionView) -> str:
    """The Reason cell; a Queued execution also shows its place: ``PoolFull (#2 in gpu)``."""
    reason = e.reason or ""
    if not e.queue or not isinstance(e.queue.get("position"), int):
        return reason
    pool = e.queue.get("pool")
    return f"{reason} (#{e.queue['position']}{' in ' + pool if pool else ''})"
