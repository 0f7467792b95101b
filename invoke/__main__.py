"""``sys-invoke-skill`` / ``python -m invoke``: flags and environment, the termination message, the
exit code. The only module that reads the environment or writes files.

    FABRIC_PAYLOAD                 {"agentName", "input", "params"} (set by the operator)
    FABRIC_AGENT_ENDPOINTS_FILE    YAML/JSON agent -> base URL (a mounted ConfigMap key)
    FABRIC_AGENT_URL_TEMPLATE      e.g. http://agents.svc:8080/agents/{agent}
    FABRIC_INVOKE_DEADLINE, _CONNECT_TIMEOUT, _REQUEST_TIMEOUT, _MAX_ATTEMPTS, _BACKOFF_BASE,
    _BACKOFF_CAP, _POLL_INTERVAL   see settings.py (each also a flag, e.g. --deadline)
    FABRIC_INVOKE_IDEMPOTENCY_KEY  else fabric-$FABRIC_EXECUTION, else fabric-$HOSTNAME
    FABRIC_TERMINATION_LOG         default /dev/termination-log

Exit code: 0 Succeeded, 1 any other invoke status, 2 usage error (bad payload or configuration;
the termination message is still written, with invokeStatus Error).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import uuid
from typing import Mapping, Sequence

from controller.clock import Clock, RealClock

from .action import Invocation
from .endpoints import EndpointConfigError, check_template, parse_endpoints, resolve_endpoint
from .outcome import InvokeStatus, Outcome, termination_message
from .payload import PayloadError, agent_name_of, parse_payload
from .settings import InvokeSettings
from .transport import AiohttpTransport

_DEFAULTS = InvokeSettings()
_NUMBERS = (  # flag, environment variable suffix, type
    ("deadline", "DEADLINE", float), ("connect_timeout", "CONNECT_TIMEOUT", float),
    ("request_timeout", "REQUEST_TIMEOUT", float), ("max_attempts", "MAX_ATTEMPTS", int),
    ("backoff_base", "BACKOFF_BASE", float), ("backoff_cap", "BACKOFF_CAP", float),
    ("poll_interval", "POLL_INTERVAL", float),
)


class UsageError(Exception):
    """Bad configuration or payload: exit 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sys-invoke-skill",
        description="Invoke the agent named by $FABRIC_PAYLOAD over HTTP, follow the activation to its end, "
                    "and write the outcome to the termination message. Every flag also reads an environment "
                    "variable (named in its help); the flag wins.")
    parser.add_argument("--endpoints-file", help="YAML/JSON agent -> base URL [FABRIC_AGENT_ENDPOINTS_FILE]")
    parser.add_argument("--url-template", help="base URL of any agent, {agent} = its name [FABRIC_AGENT_URL_TEMPLATE]")
    parser.add_argument("--termination-log", help="where the outcome is written [FABRIC_TERMINATION_LOG, "
                                                  f"default {_DEFAULTS.termination_log}]")
    for name, env, kind in _NUMBERS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind,
                            help=f"[FABRIC_INVOKE_{env}, default {getattr(_DEFAULTS, name):g}]")
    return parser


def _number(text: str, kind: type, where: str) -> float:
    try:
        value = kind(text)
    except ValueError as exc:
        raise UsageError(f"{where}: {text!r} is not a number") from exc
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{where}: {text!r} must be a positive finite number")
    return value


def build_settings(args: argparse.Namespace, env: Mapping[str, str]) -> InvokeSettings:
    numbers = {}
    for name, suffix, kind in _NUMBERS:
        flag, var = getattr(args, name), f"FABRIC_INVOKE_{suffix}"
        if flag is not None:
            numbers[name] = _number(str(flag), kind, f"--{name.replace('_', '-')}")
        elif env.get(var):
            numbers[name] = _number(env[var], kind, var)
    endpoints_file = args.endpoints_file or env.get("FABRIC_AGENT_ENDPOINTS_FILE") or None
    template = args.url_template or env.get("FABRIC_AGENT_URL_TEMPLATE") or None
    try:
        endpoints = {}
        if endpoints_file:
            try:
                with open(endpoints_file, encoding="utf-8") as file:
                    endpoints = parse_endpoints(file.read(), endpoints_file)
            except OSError as exc:
                raise UsageError(f"cannot read the endpoints file: {exc}") from exc
        if template:
            check_template(template)
    except EndpointConfigError as exc:
        raise UsageError(str(exc)) from exc
    execution = env.get("FABRIC_EXECUTION") or env.get("HOSTNAME")
    key = env.get("FABRIC_INVOKE_IDEMPOTENCY_KEY") or (f"fabric-{execution}" if execution else f"fabric-{uuid.uuid4()}")
    return InvokeSettings(
        endpoints=endpoints, url_template=template, idempotency_key=key,
        termination_log=args.termination_log or env.get("FABRIC_TERMINATION_LOG") or _DEFAULTS.termination_log,
        **numbers)


def _log(clock: Clock, line: str) -> None:
    stamp = clock.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    print(f"{stamp}Z sys-invoke-skill: {line}", flush=True)


async def invoke(settings: InvokeSettings, payload_text: str | None, clock: Clock) -> Outcome:
    try:
        request = parse_payload(payload_text)
    except PayloadError as exc:
        return Outcome(agent=agent_name_of(payload_text), status=InvokeStatus.ERROR, error=str(exc), usage_error=True)
    endpoint = resolve_endpoint(request.agent, settings.endpoints, settings.url_template)
    if endpoint is None:
        return Outcome(agent=request.agent, status=InvokeStatus.NOT_FOUND,
                       error=f"no endpoint configured for agent {request.agent} "
                             "(FABRIC_AGENT_ENDPOINTS_FILE, FABRIC_AGENT_URL_TEMPLATE)")
    async with AiohttpTransport(settings.connect_timeout) as transport:
        invocation = Invocation(request, endpoint, settings, transport, clock,
                                log=lambda line: _log(clock, line), jitter=random.random)
        return await _until_signalled(invocation)


async def _until_signalled(invocation: Invocation) -> Outcome:
    """Run the invocation; SIGTERM or SIGINT ends it with an outcome that says so (a container's
    PID 1 ignores SIGTERM unless it handles it, so without this the kubelet would SIGKILL the action
    after the grace period and the termination message would be lost)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(invocation.run())
    received: list[str] = []

    def stop(signum: signal.Signals) -> None:
        received.append(signum.name)
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        return invocation.interrupted(received[0])
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def write_termination_message(path: str, outcome: Outcome) -> None:
    """Write the outcome where the kubelet reads it; a failure to write is reported on stderr and
    does not change the exit code (the log still has the outcome)."""
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(termination_message(outcome))
    except OSError as exc:
        print(f"sys-invoke-skill: cannot write the termination message to {path}: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = os.environ
    clock = RealClock()
    try:
        settings = build_settings(args, env)
    except UsageError as exc:
        settings = InvokeSettings(termination_log=args.termination_log or env.get("FABRIC_TERMINATION_LOG")
                                  or _DEFAULTS.termination_log)
        outcome = Outcome(agent=agent_name_of(env.get("FABRIC_PAYLOAD")), status=InvokeStatus.ERROR,
                          error=str(exc), usage_error=True)
    else:
        outcome = asyncio.run(invoke(settings, env.get("FABRIC_PAYLOAD"), clock))
    message = termination_message(outcome)
    _log(clock, f"outcome: {message}")
    write_termination_message(settings.termination_log, outcome)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
