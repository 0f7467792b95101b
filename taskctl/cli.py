"""The argparse tree: verbs, their flags, the design's spellings as aliases, help with examples.

Every verb is reachable at the top level (``taskctl list``) and, as in the design's usage notes,
under ``tasks`` (``taskctl tasks list --scheduled``, ``taskctl tasks pauseSchedule NAME``). Global
flags are accepted before or after the verb. A usage error is one line (``UsageError``, exit 2).
"""

from __future__ import annotations

import argparse
from typing import Any

from .errors import UsageError
from .settings import BACKENDS, OUTPUTS

PROG = "taskctl"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own two-line usage dump -> one line
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _fmt(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34, width=100)


def _global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    g = p.add_argument_group("global options (also accepted before the verb)")
    g.add_argument("-n", "--namespace", default=d, help="Kubernetes namespace [env TASKCTL_NAMESPACE; default: the kubeconfig context's]")
    g.add_argument("-A", "--all-namespaces", action="store_true", default=d if suppress else False, help="list across every namespace")
    g.add_argument("-o", "--output", choices=OUTPUTS, default=d, help="output format (default table)")
    g.add_argument("--gateway", metavar="URL", default=d, help="task gateway URL; reads go there when set [env TASKCTL_GATEWAY]")
    g.add_argument("--token", default=d, help="bearer token for the gateway [env TASKCTL_TOKEN]")
    g.add_argument("--token-file", metavar="FILE", default=d,
                   help="file holding the gateway token (e.g. a mounted Secret) [env TASKCTL_TOKEN_FILE]")
    g.add_argument("--backend", choices=BACKENDS, default=d, help="where reads go: auto (gateway if configured), kube or gateway")
    g.add_argument("--kubeconfig", metavar="FILE", default=d, help="kubeconfig [env TASKCTL_KUBECONFIG, KUBECONFIG]")
    g.add_argument("--context", default=d, help="kubeconfig context [env TASKCTL_CONTEXT]")
    g.add_argument("--project", default=d, help="Fabric project: prefix of agent schedule names [env TASKCTL_PROJECT]")
    g.add_argument("--config", metavar="FILE", default=d, help="config file [env TASKCTL_CONFIG; default ~/.config/taskctl/config.yaml]")
    g.add_argument("--no-color", action="store_true", default=d if suppress else False, help="no colours (also NO_COLOR)")
    g.add_argument("--color", choices=("auto", "always", "never"), default=d, help="colours: auto (on a terminal), always, never")
    g.add_argument("--request-timeout", type=float, metavar="SECONDS", default=d, help="timeout of one API request (default 30)")


def _add(sub: Any, name: str, *, aliases: tuple[str, ...] = (), help: str, description: str, examples: str,
         cmd: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, aliases=list(aliases), help=help, description=description,
                       epilog="examples:\n" + examples.strip("\n"), formatter_class=_fmt)
    _global_options(p, suppress=True)
    p.set_defaults(cmd=cmd)
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _task_verbs(sub: Any, prog: str) -> None:
    p = _add(sub, "list", aliases=("ls",), cmd="list",
             help="list tasks (or a schedule's executions)",
             description="List tasks: scheduled ones show their cron and PAUSED when suspended.",
             examples=f"""
  {prog} list                              every task in the namespace
  {prog} list --scheduled                  schedules only (the design's `tasks list --scheduled`)
  {prog} list --status failed --since 2h   one-off tasks that failed in the last two hours
  {prog} list --schedule proj1-hubble-hourly   the executions of one schedule
  {prog} list -A -o wide                   every namespace, more columns
  {prog} list -o name                      names only, for scripts""")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--scheduled", action="store_const", const=True, dest="scheduled", help="only scheduled tasks")
    kind.add_argument("--onetime", "--one-off", action="store_const", const=False, dest="scheduled", help="only one-off tasks")
    p.add_argument("--status", action="append", default=[], metavar="STATUS",
                   help="only this status (Active, Paused, Pending, Running, Succeeded, Failed, Invalid); repeat or comma-separate")
    p.add_argument("--skill", action="append", default=[], metavar="NAME", help="only this skill; repeatable")
    p.add_argument("--schedule", metavar="NAME", help="list the executions of this schedule instead")
    p.add_argument("--since", metavar="WHEN", help="only started since: a duration (10m, 2h, 3d) or an RFC 3339 time")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N rows")

    p = _add(sub, "describe", aliases=("get", "show"), cmd="describe",
             help="everything about one task",
             description="Show one task: its spec, the schedule in words, the next 5 runs, last run and success, "
                         "concurrency, suspension, missed runs, recent executions and events.",
             examples=f"""
  {prog} describe proj1-hubble-hourly
  {prog} describe proj1-hubble-hourly -o yaml""")
    p.add_argument("name", metavar="NAME", help="task name")

    p = _add(sub, "executions", aliases=("execs", "history"), cmd="executions",
             help="the executions of a task, newest first",
             description="List a task's executions, newest first, with result, duration and log size.",
             examples=f"""
  {prog} executions proj1-hubble-hourly
  {prog} executions proj1-hubble-hourly --status Failed --limit 5 -o wide""")
    p.add_argument("name", metavar="NAME", help="task name")
    p.add_argument("--status", action="append", default=[], metavar="STATUS", help="only this status; repeatable")
    p.add_argument("--since", metavar="WHEN", help="only started since: a duration or an RFC 3339 time")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N executions")

    p = _add(sub, "logs", aliases=("log",), cmd="logs",
             help="the log of an execution (or of a task's newest one)",
             description="Print an execution's log. Given a task, its newest execution. --follow prints new lines "
                         "as they come and returns when the execution has finished.",
             examples=f"""
  {prog} logs proj1-hubble-hourly                  the newest execution's log
  {prog} logs proj1-hubble-hourly-28950000 --tail 20 --timestamps
  {prog} logs proj1-hubble-hourly -f               follow until the run ends
  {prog} logs proj1-hubble-hourly --grep ERROR -i --since 10m
  {prog} logs proj1-hubble-hourly-28950000 --raw --save run.log   download the stored file""")
    p.add_argument("name", metavar="NAME|EXECUTION", help="task or execution name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the execution ends")
    p.add_argument("--tail", type=_positive, metavar="N", help="only the last N lines")
    p.add_argument("--since", metavar="DURATION", help="only lines of the last DURATION (10m, 2h)")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with its timestamp")
    p.add_argument("--grep", metavar="TEXT", help="only lines containing TEXT")
    p.add_argument("--regex", action="store_true", help="--grep is a regular expression")
    p.add_argument("-i", "--ignore-case", action="store_true", help="--grep ignores case")
    p.add_argument("--offset", type=_positive, default=0, metavar="N", help="skip the first N selected lines")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N lines")
    p.add_argument("--newest-first", action="store_true", help="newest line first")
    p.add_argument("--raw", action="store_true", help="the log file as stored, byte for byte (a download)")
    p.add_argument("--save", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("-c", "--container", help="container of a multi-container pod (Kubernetes backend)")

    p = _add(sub, "pause", aliases=("pauseSchedule", "pause-schedule", "suspend"), cmd="pause",
             help="pause a schedule", description="Pause a scheduled task: no new runs start until it is resumed; "
                                                  "a run already going continues.",
             examples=f"""
  {prog} pause proj1-hubble-hourly
  {prog} tasks pauseSchedule proj1-hubble-hourly -o json   the design's spelling and answer""")
    p.add_argument("name", metavar="NAME", help="scheduled task name")

    p = _add(sub, "resume", aliases=("resumeSchedule", "resume-schedule", "unpause"), cmd="resume",
             help="resume a paused schedule", description="Resume a paused scheduled task.",
             examples=f"""
  {prog} resume proj1-hubble-hourly
  {prog} tasks resumeSchedule proj1-hubble-hourly""")
    p.add_argument("name", metavar="NAME", help="scheduled task name")

    p = _add(sub, "delete", aliases=("cancel", "rm"), cmd="delete",
             help="delete a task (or cancel one execution)",
             description="Delete tasks: a schedule stops, its CronJob, Jobs and pods are removed. Given an "
                         "execution name, cancel only that execution. Asks first unless --yes.",
             examples=f"""
  {prog} delete proj1-hubble-hourly
  {prog} delete proj1-hubble-hourly --yes
  {prog} cancel proj1-hubble-hourly-28950000 --yes          stop one running execution""")
    p.add_argument("names", nargs="+", metavar="NAME", help="task or execution names")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    p = _add(sub, "run", aliases=("trigger", "run-now"), cmd="run",
             help="run a task now", description="Start an execution now. For a schedule this is `kubectl create job "
                                                "--from=cronjob/NAME`: a Job <task>-manual-<epoch minutes>-<suffix> "
                                                "from the CronJob's template, reported on the task like its scheduled "
                                                "runs. While an execution of the task is still active, the task's "
                                                "concurrencyPolicy decides: Allow starts another, Forbid refuses "
                                                "(naming the active one), Replace cancels it and starts the new one.",
             examples=f"""
  {prog} run proj1-hubble-hourly
  {prog} run proj1-hubble-hourly && {prog} logs proj1-hubble-hourly -f""")
    p.add_argument("name", metavar="NAME", help="task name")

    p = _add(sub, "rerun", aliases=("restart",), cmd="rerun",
             help="run an execution again from its record",
             description="Recreate a run from its record: a one-off task <execution>-rerun-<suffix> with the spec "
                         "the execution was made from (the gateway keeps it with every execution), annotated "
                         "fabric.dev/rerun-of, in the execution's namespace; it works after the execution's task was "
                         "deleted. Without a gateway the cluster keeps no spec per run: the task's current spec is "
                         "used, and a deleted task cannot be rerun.",
             examples=f"""
  {prog} rerun proj1-hubble-hourly-28950000
  {prog} rerun proj1-hubble-hourly-28950000 -o name | xargs {prog} logs -f""")
    p.add_argument("execution", metavar="EXECUTION", help="execution name")

    for verb, aliases, what in (("create", (), "create tasks from a file"),
                                ("apply", (), "create or update tasks from a file")):
        p = _add(sub, verb, aliases=aliases, cmd=verb, help=what,
                 description=f"{what[0].upper() + what[1:]} (YAML or JSON, several documents allowed, '-' for standard "
                             "input). Each task is checked as the operator will check it first, so an invalid cron is "
                             "reported with its position." + (" Server-side apply: fields this tool set before and "
                                                             "no longer sets are removed." if verb == "apply" else ""),
                 examples=f"""
  {prog} {verb} -f manifests/examples/hourly-task.yaml
  cat task.yaml | {prog} {verb} -f -
  {prog} {verb} -f task.yaml --dry-run        check and print, change nothing""")
        p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                       help="file, directory (its *.yaml, *.yml, *.json) or '-'; repeatable")
        p.add_argument("--dry-run", action="store_true", help="validate and print the tasks; send nothing")


def _agents(sub: Any, prog: str) -> None:
    agents = sub.add_parser("agents", help="schedule and inspect agent invocations",
                            description="Agent invocations as tasks (the design's `cortex agents` verbs).",
                            formatter_class=_fmt,
                            epilog=f"examples:\n  {prog} agents invoke hubble_agent input --params '{{\"payload\":{{}}}}'"
                                   f"\n  {prog} agents list-activations --correlation-id proj1-hubble-hourly")
    _global_options(agents, suppress=True)
    verbs = agents.add_subparsers(dest="agents_verb", metavar="VERB", parser_class=Parser)
    verbs.required = True
    p = _add(verbs, "invoke", cmd="agents-invoke", help="invoke an agent now or on a schedule",
             description="Create a task that invokes AGENT's INPUT through the sys-invoke-skill's invoke action: once, "
                         "or with --scheduleCron on a schedule. The task is named after --scheduleName, prefixed "
                         "with the project, '_' -> '-' (proj1 + hubble_hourly -> proj1-hubble-hourly).",
             examples=f"""
  {prog} agents invoke hubble_agent input --params '{{"payload":{{"text":"test cron"}}}}' --scheduleCron "* * * * *"
  {prog} agents invoke hubble_agent input --params '{{"payload":{{"text":"test cron"}}}}' --scheduleCron "@hourly" --scheduleName "hubble_hourly"
  {prog} agents invoke hubble_agent input --schedule-cron "30 2 * * *" --time-zone Europe/Paris --concurrency Forbid --project proj1""")
    p.add_argument("agent", metavar="AGENT", help="agent name")
    p.add_argument("input", metavar="INPUT", help="the agent's input (service) name")
    p.add_argument("--params", default="{}", metavar="JSON", help="invoke parameters, JSON (default {})")
    p.add_argument("--schedule-cron", "--scheduleCron", dest="schedule_cron", metavar="CRON",
                   help="run on this cron schedule (5 fields or @hourly, @daily, ...)")
    # --schduleName: the spelling in the design's own example; kept so that example works.
    p.add_argument("--schedule-name", "--scheduleName", "--schduleName", dest="schedule_name", metavar="NAME",
                   help="name of the schedule (prefixed with the project, '_' -> '-')")
    p.add_argument("--time-zone", "--timeZone", dest="time_zone", metavar="TZ", help="IANA time zone of the schedule (default UTC)")
    p.add_argument("--concurrency", "--concurrencyPolicy", dest="concurrency", type=str.capitalize,
                   choices=("Allow", "Forbid", "Replace"), help="when a run is still going: Allow, Forbid or Replace")
    p.add_argument("--image", default=argparse.SUPPRESS, help="image of the invoke action [env TASKCTL_INVOKE_IMAGE]")
    p.add_argument("--agent-url-template", default=argparse.SUPPRESS, metavar="URL",
                   help="where agents live, with {agent}: given to the Task as FABRIC_AGENT_URL_TEMPLATE "
                        "[env TASKCTL_AGENT_URL_TEMPLATE]")
    p.add_argument("--deadline", "--invoke-deadline", dest="invoke_deadline", type=int, metavar="SECONDS",
                   help="give up on the agent after SECONDS (the action's FABRIC_INVOKE_DEADLINE; default 600): "
                        "a hung agent ends the run TimedOut")
    p.add_argument("--dry-run", action="store_true", help="print the task; create nothing")

    p = _add(verbs, "list-activations", aliases=("listActivations", "activations"), cmd="agents-activations",
             help="executions of an agent schedule",
             description="List the invocations (executions) made for a correlation id: a schedule's name, as given to "
                         "--scheduleName or as shown by `list --scheduled`.",
             examples=f"""
  {prog} agents list-activations --correlation-id proj1-hubble-hourly
  {prog} agents list-activations --correlationId hubble_hourly --project proj1""")
    p.add_argument("--correlation-id", "--correlationId", dest="correlation_id", required=True, metavar="ID",
                   help="the schedule's name")
    p.add_argument("--status", action="append", default=[], metavar="STATUS", help="only this status; repeatable")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N")


def build_parser() -> Parser:
    prog = PROG
    root = Parser(prog=prog, formatter_class=_fmt,
                  description="Manage Fabric tasks: list, describe, follow logs, pause, resume, run and delete "
                              "scheduled and one-off tasks. Also a kubectl plugin: `kubectl task list`.",
                  epilog=f"""examples:
  {prog} list --scheduled
  {prog} describe proj1-hubble-hourly
  {prog} logs proj1-hubble-hourly --follow
  {prog} pause proj1-hubble-hourly && {prog} resume proj1-hubble-hourly
  {prog} agents invoke hubble_agent input --params '{{"payload":{{"text":"hi"}}}}' --scheduleCron "@hourly" --scheduleName hubble_hourly
  source <({prog} completion bash)

Reads go to the task gateway when one is configured (--gateway, TASKCTL_GATEWAY or the config
file), otherwise to the Kubernetes API. pause, resume, run, delete and agents invoke go through
the gateway when a gateway and a token are configured (its token's scopes apply), otherwise, and
create/apply always, to the Kubernetes API.
Exit codes: 0 ok, 1 failed, 2 bad usage, 3 not found, 4 gateway or API server unreachable.""")
    _global_options(root, suppress=False)
    root.add_argument("--version", action="store_true", help="print the version and exit")
    sub = root.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    _task_verbs(sub, prog)
    tasks = sub.add_parser("tasks", help="the same task verbs, spelled as in the design (tasks list, tasks pauseSchedule, ...)",
                           description="Task verbs under the design's `tasks` group.", formatter_class=_fmt,
                           epilog=f"examples:\n  {prog} tasks list --scheduled\n  {prog} tasks pauseSchedule proj1-hubble-hourly"
                                  f"\n  {prog} tasks resumeSchedule proj1-hubble-hourly\n  {prog} tasks delete proj1-hubble-hourly")
    _global_options(tasks, suppress=True)
    tverbs = tasks.add_subparsers(dest="tasks_verb", metavar="VERB", parser_class=Parser)
    tverbs.required = True
    _task_verbs(tverbs, f"{prog} tasks")
    _agents(sub, prog)
    p = _add(sub, "completion", cmd="completion", help="print a shell completion script",
             description="Print a completion script for bash or zsh (verbs, flags and task names).",
             examples=f"""
  source <({prog} completion bash)            # in ~/.bashrc
  source <({prog} completion zsh)             # in ~/.zshrc
  {prog} completion bash > /etc/bash_completion.d/{prog}""")
    p.add_argument("shell", choices=("bash", "zsh"), help="bash or zsh")
    return root
