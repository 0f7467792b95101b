"""An example agent service for the demo and the tests: ``fabric-example-agent``.

It speaks the agent HTTP contract (README, "The invoke action and the agent HTTP contract") for any
number of agents under one base path, and can be told to misbehave, per call or per agent::

    POST /agents/{agent}/invocations         start an activation (body {input, params})
    GET  /agents/{agent}/activations/{id}    poll it
    GET  /invocations                        every request it received, oldest first, as
                                             {"invocations": [{seq, agent, kind: invoke|poll, idempotencyKey,
                                               body, answer, activationId, replay}]}
    GET  /healthz

    fabric-example-agent --host 127.0.0.1 --port 8070 [--agent NAME[=MODE]]...

Without ``--agent`` every agent name is served (mode ``sync``); with it, only the names given (the
rest answer 404) in the mode given. A call's ``params.mode`` overrides the agent's mode:

    sync    200 Succeeded at once, result {"agent", "input", "params"} (an echo)
    async   202 Running; every poll advances one step, Succeeded after ``params.steps`` polls
            (default 2); polls are told ``Retry-After: params.retryAfter`` (default 1)
    fail    200 Failed, error ``params.error`` (default "failed on purpose")
    hang    the POST is never answered (until the service stops)
    stuck   202 Running, and every poll says Running again
    5xx     HTTP ``params.status`` (default 503) for the first ``params.failures`` POSTs of one
            Idempotency-Key (default: every one), then as ``sync``
    reject  400 {"error": ...}
    drop    the POST is recorded, then the connection is closed without an answer

Idempotency: a POST whose ``Idempotency-Key`` already started an activation of that agent gets that
activation back (recorded with ``replay: true``) and starts nothing. Everything is in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from aiohttp import web

MODES = ("sync", "async", "fail", "hang", "stuck", "5xx", "reject", "drop")


@dataclass
class _Activation:
    id: str
    agent: str
    mode: str
    body: dict[str, Any]
    steps_left: int = 0
    status: str = "Running"
    retry_after: str = "1"

    def answer(self) -> dict[str, Any]:
        data: dict[str, Any] = {"activationId": self.id, "status": self.status}
        if self.status == "Succeeded":
            data["result"] = {"agent": self.agent, "input": self.body.get("input"), "params": self.body.get("params")}
        elif self.status == "Failed":
            params = self.body.get("params")
            error = params.get("error") if isinstance(params, dict) else None
            data["error"] = error if isinstance(error, str) else "failed on purpose"
        return data


@dataclass
class ExampleAgents:
    """The service's state. One event loop owns it; handlers never await between reading and
    writing it, so each request sees and leaves it consistent."""

    agents: Mapping[str, str] | None = None
    """Agent name -> mode; None: any name, mode sync."""
    invocations: list[dict[str, Any]] = field(default_factory=list)
    """Every request received on the contract's routes, in arrival order."""
    activations: dict[str, _Activation] = field(default_factory=dict)
    by_key: dict[tuple[str, str], str] = field(default_factory=dict)
    """(agent, Idempotency-Key) -> activation id: the activation that key started."""
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    """(agent, Idempotency-Key) -> 5xx answers given so far (mode 5xx)."""
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    """Futures of ``wait_for`` callers, all resolved (and the list emptied) after each recorded
    request; tests wait on them instead of polling."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on shutdown: releases the handlers of hanging calls."""

    def _record(self, agent: str, kind: str, request: web.Request, body: Any, **more: Any) -> dict[str, Any]:
        entry = {"seq": len(self.invocations) + 1, "agent": agent, "kind": kind,
                 "idempotencyKey": request.headers.get("Idempotency-Key"), "body": body, "answer": None,
                 "activationId": None, **more}
        self.invocations.append(entry)
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()
        return entry

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
        """Wait until ``predicate(invocations)`` holds (checked after each recorded request)."""
        while not predicate(self.invocations):
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            await waiter

    def _mode(self, agent: str, body: dict[str, Any]) -> str | None:
        """The mode of this call; None when the agent is unknown."""
        if self.agents is not None and agent not in self.agents:
            return None
        params = body.get("params")
        mode = params.get("mode") if isinstance(params, dict) else None
        if isinstance(mode, str):
            return mode
        return self.agents[agent] if self.agents is not None else "sync"

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        agent = request.match_info["agent"]
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        entry = self._record(agent, "invoke", request, body)
        if not isinstance(body, dict) or "input" not in body:
            return self._answer(entry, 400, {"error": "the body must be a JSON object with input (and params)"})
        mode = self._mode(agent, body)
        if mode is None:
            return self._answer(entry, 404, {"error": f"no agent named {agent}"})
        if mode not in MODES:
            return self._answer(entry, 400, {"error": f"unknown mode {mode!r}; one of {', '.join(MODES)}"})
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        key = (agent, request.headers.get("Idempotency-Key") or "")
        if key[1] and key in self.by_key:
            activation = self.activations[self.by_key[key]]
            entry["replay"] = True
            return self._answer(entry, 200 if activation.status != "Running" else 202, activation.answer(), activation)
        if mode == "hang":
            await self.stopping.wait()
            return self._answer(entry, 503, {"error": "the agent is stopping"})
        if mode == "drop":
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPServiceUnavailable()  # never reaches the client: its connection is closed
        if mode == "reject":
            return self._answer(entry, 400, {"error": str(params.get("error", "rejected on purpose"))})
        if mode == "5xx":
            served = self.failures.get(key, 0)
            failures = params.get("failures")
            if not isinstance(failures, int) or served < failures:
                self.failures[key] = served + 1
                status = params.get("status") if isinstance(params.get("status"), int) else 503
                headers = {"Retry-After": str(params["retryAfter"])} if "retryAfter" in params else None
                return self._answer(entry, status, {"error": f"unavailable on purpose ({served + 1})"},
                                    headers=headers)
        activation = _Activation(id=f"act-{uuid.uuid4().hex[:20]}", agent=agent, mode=mode, body=body,
                                 retry_after=str(params.get("retryAfter", 1)))
        if mode in ("sync", "5xx"):
            activation.status = "Succeeded"
        elif mode == "fail":
            activation.status = "Failed"
        elif mode == "async":
            steps = params.get("steps", 2)
            activation.steps_left = steps if isinstance(steps, int) and steps >= 0 else 2
        self.activations[activation.id] = activation
        if key[1]:
            self.by_key[key] = activation.id
        status = 202 if activation.status == "Running" else 200
        return self._answer(entry, status, activation.answer(), activation)

    async def poll(self, request: web.Request) -> web.Response:
        agent, activation_id = request.match_info["agent"], request.match_info["id"]
        entry = self._record(agent, "poll", request, None)
        activation = self.activations.get(activation_id)
        if activation is None or activation.agent != agent:
            return self._answer(entry, 404, {"error": f"no activation {activation_id} of agent {agent}"})
        if activation.mode == "async" and activation.status == "Running":
            if activation.steps_left <= 1:
                activation.status = "Succeeded"
            activation.steps_left -= 1
        return self._answer(entry, 200, activation.answer(), activation)

    def _answer(self, entry: dict[str, Any], status: int, data: dict[str, Any],
                activation: _Activation | None = None, headers: Mapping[str, str] | None = None) -> web.Response:
        entry["answer"] = status
        entry["activationId"] = activation.id if activation else None
        all_headers = dict(headers or {})
        if activation is not None and activation.status == "Running":
            all_headers["Retry-After"] = activation.retry_after
        return web.json_response(data, status=status, headers=all_headers,
                                 dumps=lambda obj: json.dumps(obj, ensure_ascii=False))

    async def list_invocations(self, request: web.Request) -> web.Response:
        return web.json_response({"invocations": self.invocations},
                                 dumps=lambda obj: json.dumps(obj, ensure_ascii=False))


STATE = web.AppKey("state", ExampleAgents)


def make_app(agents: Mapping[str, str] | None = None) -> web.Application:
    """The service as an aiohttp app; ``app[STATE]`` is its ``ExampleAgents`` state."""
    state = ExampleAgents(agents=agents)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/agents/{agent}/invocations", state.invoke)
    app.router.add_get("/agents/{agent}/activations/{id}", state.poll)
    app.router.add_get("/invocations", state.list_invocations)
    app.router.add_get("/healthz", _healthz)

    async def release_hanging(app: web.Application) -> None:
        state.stopping.set()

    app.on_shutdown.append(release_hanging)
    return app


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _agent_modes(values: Sequence[str]) -> dict[str, str] | None:
    if not values:
        return None
    agents = {}
    for value in values:
        name, _, mode = value.partition("=")
        mode = mode or "sync"
        if not name or mode not in MODES:
            raise SystemExit(f"fabric-example-agent: --agent {value!r}: expected NAME[=MODE], MODE one of {', '.join(MODES)}")
        agents[name] = mode
    return agents


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fabric-example-agent",
                                     description="An example agent service speaking the agent HTTP contract.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8070)
    parser.add_argument("--agent", action="append", default=[], metavar="NAME[=MODE]",
                        help=f"serve only these agents, each in a mode ({', '.join(MODES)}; default sync)")
    args = parser.parse_args(argv)
    web.run_app(make_app(_agent_modes(args.agent)), host=args.host, port=args.port, shutdown_timeout=5,
                print=lambda text: print(text, flush=True))


if __name__ == "__main__":
    main()
