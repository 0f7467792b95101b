"""One function per verb: arguments in, text out, through a backend.

``Context`` owns the backends a command opens (a reading one: gateway or Kubernetes; a writing
one: the gateway's ``/v1`` when ``Settings.writes_to_gateway``, else Kubernetes) and closes them
when the command ends. Commands never read the
environment or parse flags; ``__main__`` does that and hands them ``Settings``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import yaml

from controller.model import InvalidTask, describe as describe_schedule, next_runs, parse_time
from controller.model import validate_schedule, validate_task_name, validate_time_zone

from . import render
from controller.model.operations import rerun_task

from .agents import invoke_task, task_name
from .backend import Backend, ListQuery, LogOptions, canonical_status
from .completion import bash as bash_completion, zsh as zsh_completion
from .errors import CliError, NotFoundError, UsageError
from .gateway_backend import GatewayBackend
from .humanize import parse_duration
from .documents import place_task
from .settings import Settings, context_namespace


@dataclass
class Context:
    settings: Settings
    out: TextIO
    err: TextIO
    stdin: TextIO
    _reader: Backend | None = None
    _kube: Any = None
    _gateway: GatewayBackend | None = None
    _opened: list[Any] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def style(self) -> render.Style:
        s = self.settings
        return render.Style(now=s.clock(), color=s.color, width=s.width, ascii=s.ascii)

    async def kube(self) -> Any:
        """The Kubernetes backend (``kube_backend.KubeBackend``), imported on first use: its client
        library takes a quarter of a second to import, which gateway-only commands need not pay."""
        if self._kube is None:
            from .kube_backend import KubeBackend

            s = self.settings
            self._kube = await KubeBackend.open(
                kubeconfig=s.kubeconfig, context=s.context, namespace=s.namespace, all_namespaces=s.all_namespaces,
                request_timeout=s.request_timeout, clock=s.clock, poll_interval=s.poll_interval, note=self.note)
            self._opened.append(self._kube)
        return self._kube

    def gateway(self) -> GatewayBackend:
        if self._gateway is None:
            s = self.settings
            assert s.gateway_url is not None
            self._gateway = GatewayBackend(
                s.gateway_url, token=s.token, namespace=None if s.all_namespaces else s.namespace,
                request_timeout=s.request_timeout, clock=s.clock, poll_interval=s.poll_interval, note=self.note,
                write_namespace=s.namespace)
            self._opened.append(self._gateway)
        return self._gateway

    async def reader(self) -> Backend:
        if self._reader is None:
            self._reader = self.gateway() if self.settings.reads_from_gateway else await self.kube()
        return self._reader

    async def writer(self) -> Any:
        """Where pause, resume, run, delete and agents invoke go (``Settings.writes_to_gateway``):
        the ``GatewayBackend`` or the ``KubeBackend``; both have ``set_suspend``, ``delete`` and
        ``run`` with the same answers."""
        return self.gateway() if self.settings.writes_to_gateway else await self.kube()

    def write_target(self, writer: Any) -> str:
        """Where a write lands, for a confirmation question."""
        if isinstance(writer, GatewayBackend):
            ns = f'namespace "{self.settings.namespace}"' if self.settings.namespace else "the gateway's default namespace"
            return f"{ns} through the gateway at {writer.url}"
        return f'namespace "{writer.namespace}"'

    async def close(self) -> None:
        for backend in reversed(self._opened):
            await backend.close()
        self._opened.clear()


def _statuses(values: list[str]) -> tuple[str, ...]:
    return tuple(canonical_status(v) for raw in values for v in raw.split(",") if v.strip())


def _since(text: str | None, now: datetime) -> datetime | None:
    if not text:
        return None
    absolute = parse_time(text) if "T" in text or ("-" in text and text[:1].isdigit() and len(text) > 8) else None
    if absolute is not None:
        return absolute
    try:
        return now - parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--since {text!r}: {exc}; or give an RFC 3339 time") from exc


def _write(ctx: Context, text: str) -> None:
    ctx.out.write(text)
    ctx.out.flush()


# --- reads -------------------------------------------------------------------------------------


async def cmd_list(ctx: Context, args: Any) -> int:
    s = ctx.settings
    query = ListQuery(scheduled=args.scheduled, statuses=_statuses(args.status),
                      skills=tuple(k for raw in args.skill for k in raw.split(",") if k),
                      since=_since(args.since, s.clock()), limit=args.limit)
    backend = await ctx.reader()
    if args.schedule:
        if args.scheduled is False:
            raise UsageError("--schedule lists a schedule's executions; it cannot be combined with --onetime")
        executions = await backend.list_executions(args.schedule, query)
        if not executions and s.output in ("table", "wide"):
            ctx.note(f'No executions of "{args.schedule}" found.')
            return 0
        _write(ctx, render.executions(executions, s.output, ctx.style()))
        return 0
    views = await backend.list_tasks(query)
    if not views and s.output in ("table", "wide"):
        where = _where(ctx, backend)
        ctx.note(f"No tasks found{where}.")
        return 0
    _write(ctx, render.tasks(views, s.output, ctx.style(), all_namespaces=s.all_namespaces))
    return 0


def _where(ctx: Context, backend: Backend) -> str:
    if ctx.settings.all_namespaces:
        return ""
    namespace = getattr(backend, "namespace", None)
    return f' in namespace "{namespace}"' if namespace else ""


def _next_runs(view: Any, now: datetime) -> tuple[list[datetime], str | None]:
    if not view.scheduled or not view.schedule or view.suspended:
        return [], None
    try:
        return next_runs(view.schedule, view.time_zone, now, 5), None
    except InvalidTask as exc:
        return [], exc.message


async def cmd_describe(ctx: Context, args: Any) -> int:
    backend = await ctx.reader()
    view = await backend.describe(args.name)
    runs, error = _next_runs(view, ctx.settings.clock())
    _write(ctx, render.describe(view, ctx.settings.output, ctx.style(), runs, error))
    return 0


async def cmd_executions(ctx: Context, args: Any) -> int:
    s = ctx.settings
    backend = await ctx.reader()
    query = ListQuery(statuses=_statuses(args.status), since=_since(args.since, s.clock()), limit=args.limit)
    executions = await backend.list_executions(args.name, query)
    if not executions and s.output in ("table", "wide"):
        ctx.note(f'No executions of "{args.name}" yet.')
        return 0
    _write(ctx, render.executions(executions, s.output, ctx.style()))
    return 0


class _Sink:
    """Log lines to a text stream, or raw bytes to a binary one."""

    def __init__(self, text: TextIO | None, binary: BinaryIO | None, timestamps: bool) -> None:
        self._text = text
        self._binary = binary
        self._timestamps = timestamps

    def line(self, text: str, ts: datetime | None) -> None:
        assert self._text is not None
        if self._timestamps:
            stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if ts else "-"
            text = f"{stamp} {text}"
        self._text.write(text + "\n")
        self._text.flush()

    def raw(self, chunk: bytes) -> None:
        assert self._binary is not None
        self._binary.write(chunk)
        self._binary.flush()


async def cmd_logs(ctx: Context, args: Any) -> int:
    if args.raw and (args.follow or args.grep or args.tail is not None or args.since or args.timestamps
                     or args.offset or args.limit is not None or args.newest_first):
        raise UsageError("--raw downloads the log as stored; it takes no --follow, --tail, --since, --grep, "
                         "--timestamps, --offset, --limit or --newest-first")
    if args.follow and args.newest_first:
        raise UsageError("--newest-first cannot be combined with --follow")
    if args.tail is not None and args.limit is not None:
        raise UsageError("--tail and --limit exclude each other: --tail N is the last N lines")
    if (args.regex or args.ignore_case) and args.grep is None:
        raise UsageError("--regex and --ignore-case need --grep")
    since = None
    if args.since:
        try:
            since = parse_duration(args.since)
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from exc
    options = LogOptions(follow=args.follow, tail=args.tail, since=since, timestamps=args.timestamps,
                         grep=args.grep, regex=args.regex, ignore_case=args.ignore_case, offset=args.offset,
                         limit=args.limit, newest_first=args.newest_first, container=args.container)
    options.matcher()  # a bad --regex is a usage error before anything is fetched
    backend = await ctx.reader()
    handle = None
    try:
        if args.raw:
            if args.save:
                handle = open(args.save, "wb")
            binary = handle or getattr(ctx.out, "buffer", None)
            if binary is None:
                raise CliError("standard output cannot take bytes; use --save FILE")
            name = await backend.raw_log(args.name, _Sink(None, binary, False))
        else:
            if args.save:
                handle = open(args.save, "w", encoding="utf-8")
            name = await backend.logs(args.name, options, _Sink(handle or ctx.out, None, args.timestamps))
    except OSError as exc:
        raise CliError(f"cannot write {args.save}: {exc.strerror or exc}") from exc
    finally:
        if handle is not None:
            handle.close()
    if args.save:
        ctx.note(f"saved the log of {name} to {args.save}")
    return 0


# --- writes --------------------------------------------------------------------------------------


async def cmd_pause(ctx: Context, args: Any, suspend: bool = True) -> int:
    writer = await ctx.writer()
    _, text = await writer.set_suspend(args.name, suspend)
    _write(ctx, args.name + "\n" if ctx.settings.output == "name" else render.message(True, text, ctx.settings.output))
    return 0


async def cmd_resume(ctx: Context, args: Any) -> int:
    return await cmd_pause(ctx, args, suspend=False)


def _confirm(ctx: Context, question: str) -> bool:
    ctx.err.write(f"{question} [y/N] ")
    ctx.err.flush()
    answer = ctx.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


async def cmd_delete(ctx: Context, args: Any) -> int:
    writer = await ctx.writer()
    if not args.yes:
        if not ctx.settings.interactive:
            raise UsageError(f"refusing to delete {', '.join(args.names)} without confirmation: standard input is "
                             "not a terminal; pass --yes")
        what = ", ".join(f'"{n}"' for n in args.names)
        if not _confirm(ctx, f"Delete {what} in {ctx.write_target(writer)} (a task's executions and logs in the "
                             "cluster go with it)?"):
            raise CliError("nothing deleted")
    failed: CliError | None = None
    for name in args.names:
        try:
            text = await writer.delete(name)
        except NotFoundError as exc:
            failed = exc
            ctx.note(f"taskctl: {exc.message}")
            continue
        _write(ctx, name + "\n" if ctx.settings.output == "name" else render.message(True, text, ctx.settings.output))
    if failed is not None:
        return failed.exit_code
    return 0


async def cmd_run(ctx: Context, args: Any) -> int:
    writer = await ctx.writer()
    execution = await writer.run(args.name, datetime.now().astimezone())
    if ctx.settings.output == "name":
        _write(ctx, execution + "\n")
    else:
        _write(ctx, render.message(True, f'Started execution {execution} of task "{args.name}"', ctx.settings.output,
                                   execution=execution))
    return 0


async def cmd_rerun(ctx: Context, args: Any) -> int:
    """Recreate a run from its record: a one-off Task of the spec the execution was made from
    (``operations.rerun_task``), created through Kubernetes like every write."""
    reader = await ctx.reader()
    namespace, spec, note = await reader.recorded_spec(args.execution)
    if note:
        ctx.note(note)
    try:
        manifest = rerun_task(args.execution, spec)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    manifest["metadata"]["namespace"] = namespace
    kube = await ctx.kube()
    created = await kube.create(manifest, "rerun")
    task = created["metadata"]["name"]
    if ctx.settings.output == "name":
        _write(ctx, task + "\n")
    else:
        _write(ctx, render.message(True, f'Rerunning execution {args.execution} as task "{task}"',
                                   ctx.settings.output, task=task, namespace=namespace, rerunOf=args.execution))
    return 0


def _documents(paths: list[str], stdin: TextIO) -> list[tuple[str, Any]]:
    docs: list[tuple[str, Any]] = []
    files: list[tuple[str, str]] = []
    for raw in paths:
        if raw == "-":
            files.append(("<stdin>", stdin.read()))
            continue
        path = Path(raw)
        targets = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")) if path.is_dir() else [path]
        for target in targets:
            try:
                files.append((str(target), target.read_text()))
            except OSError as exc:
                raise CliError(f"cannot read {target}: {exc.strerror or exc}") from exc
    for source, text in files:
        try:
            loaded = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise CliError(f"{source} is not valid YAML or JSON: {' '.join(str(exc).split())}") from exc
        for doc in loaded:
            if isinstance(doc, dict) and doc.get("kind") in ("List", "TaskList"):
                docs.extend((source, item) for item in doc.get("items") or [])
            else:
                docs.append((source, doc))
    if not docs:
        raise UsageError(f"no tasks in {', '.join(paths)}")
    return docs


def _dry_run_namespace(s: Settings) -> tuple[str, bool]:
    return (s.namespace or context_namespace(s.kubeconfig, s.context) or "default"), s.namespace is not None


async def cmd_create(ctx: Context, args: Any, apply: bool = False) -> int:
    s = ctx.settings
    docs = _documents(args.filename, ctx.stdin)
    if args.dry_run:
        namespace, explicit = _dry_run_namespace(s)
        placed = [place_task(doc, source, namespace, explicit)[0] for source, doc in docs]
        fmt = s.output if s.output in ("json", "yaml") else "yaml"
        _write(ctx, render.dump(placed if len(placed) > 1 else placed[0], fmt))
        return 0
    kube = await ctx.kube()
    for source, doc in docs:
        if apply:
            name, outcome = await kube.apply(doc, source)
        else:
            created = await kube.create(doc, source)
            name, outcome = created["metadata"]["name"], "created"
        if s.output == "name":
            _write(ctx, name + "\n")
        else:
            _write(ctx, render.message(True, f"task/{name} {outcome}", s.output, task=name))
    return 0


async def cmd_apply(ctx: Context, args: Any) -> int:
    return await cmd_create(ctx, args, apply=True)


async def cmd_agents_invoke(ctx: Context, args: Any) -> int:
    s = ctx.settings
    try:
        params = json.loads(args.params)
    except ValueError as exc:
        raise UsageError(f"--params is not valid JSON: {exc}") from exc
    if args.schedule_cron is not None:
        try:
            validate_schedule(args.schedule_cron)
        except InvalidTask as exc:
            raise UsageError(f"--scheduleCron: {exc.detail}") from exc
    elif args.time_zone or args.concurrency:
        raise UsageError("--time-zone and --concurrency need --scheduleCron")
    if args.time_zone:
        try:
            validate_time_zone(args.time_zone)
        except InvalidTask as exc:
            raise UsageError(f"--time-zone: {exc.detail}") from exc
    if args.invoke_deadline is not None and args.invoke_deadline <= 0:
        raise UsageError(f"--deadline: {args.invoke_deadline} is not a positive number of seconds")
    try:
        manifest = invoke_task(args.agent, args.input, params, schedule=args.schedule_cron,
                               schedule_name=args.schedule_name, time_zone=args.time_zone,
                               concurrency=args.concurrency, project=s.project, user=s.user,
                               image=s.invoke_image, command=list(s.invoke_command),
                               agent_url_template=s.agent_url_template, deadline_seconds=args.invoke_deadline)
    except (ValueError, InvalidTask) as exc:
        detail = exc.message if isinstance(exc, InvalidTask) else str(exc)
        raise UsageError(f"--scheduleName: {detail}") from exc
    if args.dry_run:
        namespace, explicit = _dry_run_namespace(s)
        placed, _ = place_task(manifest, "agents invoke", namespace, explicit)
        _write(ctx, render.dump(placed, s.output if s.output in ("json", "yaml") else "yaml"))
        return 0
    if s.writes_to_gateway:
        # The gateway builds the same manifest (controller.model.operations) with its own invoke
        # image, and records the token's user: no "user" in the body.
        body = {"input": args.input, "params": params, "scheduleCron": args.schedule_cron,
                "scheduleName": args.schedule_name, "timeZone": args.time_zone,
                "concurrencyPolicy": args.concurrency, "project": s.project}
        name = await ctx.gateway().invoke(args.agent, {k: v for k, v in body.items() if v not in (None, "")})
    else:
        kube = await ctx.kube()
        created = await kube.create(manifest, "agents invoke")
        name = created["metadata"]["name"]
    if args.schedule_cron:
        text = (f'Scheduled agent {args.agent} ({args.input}) as task "{name}": {args.schedule_cron} '
                f'({describe_schedule(args.schedule_cron)}{", " + args.time_zone if args.time_zone else ""})')
    else:
        text = f'Invoked agent {args.agent} ({args.input}) as task "{name}"'
    _write(ctx, name + "\n" if s.output == "name" else render.message(True, text, s.output, task=name))
    return 0


async def cmd_agents_activations(ctx: Context, args: Any) -> int:
    s = ctx.settings
    backend = await ctx.reader()
    query = ListQuery(statuses=_statuses(args.status), limit=args.limit)
    wanted = args.correlation_id
    try:
        validate_task_name(wanted)
        valid = True
    except InvalidTask:
        valid = False
    try:
        clobbered = task_name(wanted, s.project)
    except (ValueError, InvalidTask):
        clobbered = None
    if not valid:
        # Not a Task name as typed (hubble_hourly): the design's clobbering makes it one.
        if clobbered is None:
            raise UsageError(f"--correlation-id {wanted!r} cannot name a schedule")
        wanted = clobbered
    try:
        executions = await backend.list_executions(wanted, query)
    except NotFoundError:
        if clobbered is None or clobbered == wanted:
            raise
        executions = await backend.list_executions(clobbered, query)
        wanted = clobbered
    if not executions and s.output in ("table", "wide"):
        ctx.note(f'No activations of "{wanted}" yet.')
        return 0
    _write(ctx, render.activations(executions, s.output, ctx.style()))
    return 0


async def cmd_completion(ctx: Context, args: Any) -> int:
    from .cli import build_parser

    parser = build_parser()
    _write(ctx, bash_completion(parser) if args.shell == "bash" else zsh_completion(parser))
    return 0


COMMANDS = {
    "list": cmd_list,
    "describe": cmd_describe,
    "executions": cmd_executions,
    "logs": cmd_logs,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "delete": cmd_delete,
    "run": cmd_run,
    "rerun": cmd_rerun,
    "create": cmd_create,
    "apply": cmd_apply,
    "agents-invoke": cmd_agents_invoke,
    "agents-activations": cmd_agents_activations,
    "completion": cmd_completion,
}
