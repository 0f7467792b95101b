"""KubeClient against a real aiohttp server on 127.0.0.1: the wire protocol, error tree and auth."""

from __future__ import annotations

import array
import asyncio
import base64
import fcntl
import json
import shutil
import socket
import ssl
import subprocess
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from controller.kube import (
    CRONJOBS,
    EVENTS,
    JOBS,
    LEASES,
    PODS,
    TASKS,
    AlreadyExists,
    ApiError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeClient,
    NotFound,
    Resource,
    ServerError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    is_expired,
    is_permanent,
    is_retryable,
    retry_after,
)
from controller.kube.client import _split_lines
from controller.kube.config import ServiceAccountToken, StaticCredentials, load_cluster_config
from controller.kube.metrics import KubeClientMetrics

NODES = Resource("", "v1", "nodes", "Node", namespaced=False)


# -- a recording API server ---------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"kind": "Thing", "metadata": {"name": "x"}})


@dataclass
class Api:
    url: str = ""
    handler: Handler = _ok
    seen: list[Seen] = field(default_factory=list)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.query),
                              dict(request.headers), body))
        return await self.handler(request)


@pytest.fixture
async def api():
    recorder = Api()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.dispatch)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    recorder.url = str(server.make_url("")).rstrip("/")
    yield recorder
    await server.close()


@pytest.fixture
async def client(api: Api):
    kube = KubeClient(api.url, credentials=StaticCredentials("Bearer t0ken"), request_timeout=2.0)
    yield kube
    await kube.close()


def status(code: int, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message, **extra}


class SteppedClock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, timezone.utc)

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("not used")


# -- resources ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource, args, path",
    [
        pytest.param(PODS, (), "/api/v1/pods", id="core-collection-all-namespaces"),
        pytest.param(PODS, ("ns",), "/api/v1/namespaces/ns/pods", id="core-collection"),
        pytest.param(PODS, ("ns", "p", "log"), "/api/v1/namespaces/ns/pods/p/log",
                     id="core-subresource"),
        pytest.param(EVENTS, ("ns", "e1"), "/api/v1/namespaces/ns/events/e1", id="core-events"),
        pytest.param(TASKS, ("ns", "t", "status"),
                     "/apis/fabric.dev/v1alpha1/namespaces/ns/tasks/t/status", id="crd-status"),
        pytest.param(JOBS, ("ns", "j"), "/apis/batch/v1/namespaces/ns/jobs/j", id="group-object"),
        pytest.param(CRONJOBS, (), "/apis/batch/v1/cronjobs", id="group-all-namespaces"),
        pytest.param(LEASES, ("kube-system", "fabric"),
                     "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/fabric",
                     id="lease"),
        pytest.param(NODES, (None, "n1"), "/api/v1/nodes/n1", id="cluster-scoped"),
        pytest.param(NODES, (None, "system:a"), "/api/v1/nodes/system%3Aa", id="name-is-escaped"),
    ],
)
def test_resource_path_follows_the_api_layout(resource: Resource, args: tuple, path: str) -> None:
    assert resource.path(*args) == path


@pytest.mark.parametrize(
    "resource, args",
    [
        pytest.param(PODS, (None, "p"), id="namespaced-name-without-namespace"),
        pytest.param(NODES, ("ns",), id="cluster-scoped-with-namespace"),
        pytest.param(PODS, ("ns", None, "log"), id="subresource-without-name"),
    ],
)
def test_resource_path_refuses_addresses_the_api_does_not_serve(resource: Resource,
                                                                args: tuple) -> None:
    with pytest.raises(ValueError):
        resource.path(*args)


def test_api_version_of_core_and_group_resources() -> None:
    assert (PODS.api_version, JOBS.api_version, TASKS.api_version) == (
        "v1", "batch/v1", "fabric.dev/v1alpha1")


# -- reads --------------------------------------------------------------------------------------


async def test_get_addresses_the_object_with_identity_and_token(api: Api, client: KubeClient):
    obj = await client.get(TASKS, "t1", namespace="ns", subresource="status")
    assert obj["metadata"]["name"] == "x"
    (seen,) = api.seen
    assert seen.method == "GET"
    assert seen.path == "/apis/fabric.dev/v1alpha1/namespaces/ns/tasks/t1/status"
    assert seen.headers["Authorization"] == "Bearer t0ken"
    assert seen.headers["User-Agent"].startswith("fabric-task-operator/")
    assert seen.headers["Accept"] == "application/json"


async def test_list_passes_selectors_pagination_and_version_as_query(api: Api,
                                                                     client: KubeClient):
    await client.list(JOBS, namespace="ns", label_selector="fabric.dev/task=t1",
                      field_selector="status.successful=1", resource_version="0", limit=500,
                      continue_token="abc")
    await client.list(JOBS)
    first, second = api.seen
    assert first.path == "/apis/batch/v1/namespaces/ns/jobs"
    assert first.query == {"labelSelector": "fabric.dev/task=t1",
                           "fieldSelector": "status.successful=1", "resourceVersion": "0",
                           "limit": "500", "continue": "abc"}
    assert (second.path, second.query) == ("/apis/batch/v1/jobs", {})


# -- error translation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, body, headers, error, retryable, permanent",
    [
        pytest.param(404, status(404, "NotFound", 'tasks "t" not found'), {}, NotFound,
                     False, True, id="404-not-found"),
        pytest.param(409, status(409, "AlreadyExists", 'jobs "j" already exists'), {},
                     AlreadyExists, False, True, id="409-already-exists"),
        pytest.param(409, status(409, "Conflict", "the object has been modified"), {}, Conflict,
                     True, False, id="409-conflict-is-retried-after-reread"),
        pytest.param(410, status(410, "Expired", "too old resource version"), {}, Gone,
                     False, False, id="410-gone-means-relist"),
        pytest.param(422, status(422, "Invalid", "spec.schedule: Invalid value"), {}, Invalid,
                     False, True, id="422-invalid"),
        pytest.param(403, status(403, "Forbidden", "cannot list jobs"), {}, Forbidden,
                     True, False, id="403-forbidden-retried-for-a-bounded-time"),
        pytest.param(429, status(429, "TooManyRequests", "slow down"), {"Retry-After": "3"},
                     TooManyRequests, True, False, id="429-with-retry-after"),
        pytest.param(500, status(500, "InternalError", "etcdserver: request timed out"), {},
                     ServerError, True, False, id="500-server-error"),
        pytest.param(503, None, {}, ServerError, True, False, id="503-non-json-body"),
        pytest.param(400, status(400, "BadRequest", "bad"), {}, ApiError, False, True,
                     id="400-plain-api-error"),
    ],
)
async def test_error_status_becomes_its_class(api: Api, client: KubeClient, code, body, headers,
                                              error, retryable, permanent):
    async def reply(request: web.Request) -> web.StreamResponse:
        if body is None:
            return web.Response(status=code, text="<html>upstream unavailable</html>",
                                headers=headers)
        return web.json_response(body, status=code, headers=headers)

    api.handler = reply
    with pytest.raises(error) as caught:
        await client.get(TASKS, "t", namespace="ns")
    exc = caught.value
    assert type(exc) is error
    assert exc.status == code
    assert (is_retryable(exc), is_permanent(exc), is_expired(exc)) == (
        retryable, permanent, error is Gone)
    if body is not None:
        assert exc.message == body["message"] and exc.reason == body["reason"]
    else:
        assert "upstream unavailable" in exc.message
    assert retry_after(exc) == (3.0 if "Retry-After" in headers else None)


async def test_retry_after_is_also_read_from_status_details(api: Api, client: KubeClient):
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            status(500, "ServerTimeout", "try later", details={"retryAfterSeconds": 2}),
            status=500)

    api.handler = reply
    with pytest.raises(ServerError) as caught:
        await client.list(PODS)
    assert retry_after(caught.value) == 2.0


async def test_connection_refused_is_a_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with KubeClient(f"http://127.0.0.1:{port}", request_timeout=2.0) as kube:
        with pytest.raises(TransportError) as caught:
            await kube.get(PODS, "p", namespace="ns")
    assert caught.value.__cause__ is not None
    assert is_retryable(caught.value) and not is_permanent(caught.value)


async def test_request_timeout_is_a_transport_error(api: Api) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)
        return web.json_response({})

    api.handler = slow
    async with KubeClient(api.url, request_timeout=0.2) as kube:
        with pytest.raises(TransportError) as caught:
            await kube.get(PODS, "p", namespace="ns")
    assert isinstance(caught.value.__cause__, asyncio.TimeoutError)


async def test_undecodable_success_body_is_a_transport_error(api: Api, client: KubeClient):
    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(text='{"truncated": ', content_type="application/json")

    api.handler = garbage
    with pytest.raises(TransportError):
        await client.get(PODS, "p", namespace="ns")


# -- writes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patch_type, patch, force, content_type, query",
    [
        pytest.param("merge", {"spec": {"suspend": True}}, False, "application/merge-patch+json",
                     {"fieldManager": "fabric-task-operator"}, id="merge"),
        pytest.param("json", [{"op": "replace", "path": "/spec/suspend", "value": True}], False,
                     "application/json-patch+json", {"fieldManager": "fabric-task-operator"},
                     id="json"),
        pytest.param("strategic", {"spec": {"suspend": True}}, False,
                     "application/strategic-merge-patch+json",
                     {"fieldManager": "fabric-task-operator"}, id="strategic"),
        pytest.param("apply", {"apiVersion": "batch/v1", "kind": "Job"}, True,
                     "application/apply-patch+yaml",
                     {"fieldManager": "fabric-task-operator", "force": "true"},
                     id="server-side-apply-forced"),
    ],
)
async def test_patch_sends_the_content_type_of_its_patch_type(api: Api, client: KubeClient,
                                                              patch_type, patch, force,
                                                              content_type, query):
    await client.patch(JOBS, "j", patch, namespace="ns", patch_type=patch_type, force=force)
    (seen,) = api.seen
    assert (seen.method, seen.path) == ("PATCH", "/apis/batch/v1/namespaces/ns/jobs/j")
    assert seen.headers["Content-Type"] == content_type
    assert seen.query == query
    assert seen.json() == patch


async def test_patch_of_a_subresource_with_own_field_manager(api: Api, client: KubeClient):
    await client.patch(TASKS, "t", {"status": {"phase": "Active"}}, namespace="ns",
                       subresource="status", field_manager="fabric-status")
    (seen,) = api.seen
    assert seen.path.endswith("/tasks/t/status")
    assert seen.query == {"fieldManager": "fabric-status"}


async def test_force_is_refused_outside_server_side_apply(client: KubeClient) -> None:
    with pytest.raises(ValueError):
        await client.patch(JOBS, "j", {}, namespace="ns", patch_type="merge", force=True)


async def test_create_and_replace_send_json_with_the_field_manager(api: Api, client: KubeClient):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}
    await client.create(JOBS, job, namespace="ns")
    await client.replace(TASKS, "t", {"status": {}}, namespace="ns", subresource="status")
    create, replace = api.seen
    assert (create.method, create.path) == ("POST", "/apis/batch/v1/namespaces/ns/jobs")
    assert create.headers["Content-Type"] == "application/json"
    assert create.query == {"fieldManager": "fabric-task-operator"}
    assert create.json() == job
    assert (replace.method, replace.path) == (
        "PUT", "/apis/fabric.dev/v1alpha1/namespaces/ns/tasks/t/status")


async def test_delete_sends_delete_options(api: Api, client: KubeClient) -> None:
    await client.delete(JOBS, "j", namespace="ns", propagation_policy="Foreground",
                        preconditions={"uid": "u-1"})
    (seen,) = api.seen
    assert (seen.method, seen.path) == ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j")
    assert seen.json() == {"kind": "DeleteOptions", "apiVersion": "v1",
                           "propagationPolicy": "Foreground", "preconditions": {"uid": "u-1"}}


async def test_delete_of_a_missing_object_raises_not_found(api: Api, client: KubeClient):
    async def missing(request: web.Request) -> web.StreamResponse:
        return web.json_response(status(404, "NotFound", 'jobs "j" not found'), status=404)

    api.handler = missing
    with pytest.raises(NotFound):
        await client.delete(JOBS, "j", namespace="ns")


# -- watch --------------------------------------------------------------------------------------


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"


def streaming(*parts: bytes | Callable[[], Awaitable[None]], status_code: int = 200) -> Handler:
    """A handler that writes each part as its own chunk (callables are awaited in between)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status_code,
                                      headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for part in parts:
            if callable(part):
                await part()
            else:
                await response.write(part)
        await response.write_eof()
        return response

    return handler


async def test_watch_decodes_events_line_by_line_across_chunk_boundaries(api: Api,
                                                                         client: KubeClient):
    big = {"type": "ADDED", "object": {"metadata": {"name": "big", "resourceVersion": "11"},
                                       "data": {"blob": "x" * 1_500_000}}}
    small = [
        {"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "12"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
        {"type": "DELETED", "object": {"metadata": {"name": "a", "resourceVersion": "14"}}},
    ]
    big_line = _line(big)
    pieces = [big_line[i:i + 7000] for i in range(0, len(big_line), 7000)]
    together = b"".join(_line(e) for e in small)
    api.handler = streaming(*pieces, together[:5], together[5:50], together[50:])

    events = [e async for e in client.watch(TASKS, namespace="ns", label_selector="a=b",
                                            resource_version="10", timeout_seconds=60)]

    assert events == [big, *small]
    (seen,) = api.seen
    assert seen.path == "/apis/fabric.dev/v1alpha1/namespaces/ns/tasks"
    assert seen.query == {"watch": "true", "labelSelector": "a=b", "resourceVersion": "10",
                          "timeoutSeconds": "60", "allowWatchBookmarks": "true"}


async def test_watch_error_event_410_raises_gone_after_earlier_events(api: Api,
                                                                      client: KubeClient):
    added = {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}}
    expired = {"type": "ERROR", "object": status(410, "Expired", "too old resource version: 1")}
    api.handler = streaming(_line(added), _line(expired))
    received = []
    with pytest.raises(Gone) as caught:
        async for event in client.watch(PODS, namespace="ns", resource_version="1"):
            received.append(event)
    assert received == [added]
    assert "too old" in caught.value.message


async def test_watch_error_event_other_than_410_raises_its_api_error(api: Api,
                                                                     client: KubeClient):
    api.handler = streaming(_line({"type": "ERROR",
                                   "object": status(500, "InternalError", "boom")}))
    with pytest.raises(ServerError):
        async for _ in client.watch(PODS):
            pass


async def test_watch_http_410_raises_gone(api: Api, client: KubeClient) -> None:
    async def gone(request: web.Request) -> web.StreamResponse:
        return web.json_response(status(410, "Gone", "expired"), status=410)

    api.handler = gone
    with pytest.raises(Gone):
        async for _ in client.watch(PODS, resource_version="1"):
            pass


async def test_watch_garbage_line_is_a_transport_error(api: Api, client: KubeClient) -> None:
    api.handler = streaming(b'{"type": "ADD\n')
    with pytest.raises(TransportError):
        async for _ in client.watch(PODS):
            pass


@pytest.mark.parametrize(
    "chunks, lines",
    [
        pytest.param([b"a\nb\n"], [b"a", b"b"], id="two-lines-one-chunk"),
        pytest.param([b"a", b"b", b"c\n", b"d"], [b"abc", b"d"], id="unterminated-last-line"),
        pytest.param([b"\n\n"], [b"", b""], id="empty-lines"),
        pytest.param([b"ab\ncd", b"ef\ngh\n"], [b"ab", b"cdef", b"gh"], id="line-across-chunks"),
    ],
)
async def test_split_lines_recuts_chunks_into_lines(chunks, lines) -> None:
    async def source():
        for chunk in chunks:
            yield chunk

    assert [line async for line in _split_lines(source())] == lines


# -- stream -------------------------------------------------------------------------------------


async def test_stream_delivers_lines_before_the_response_ends(api: Api, client: KubeClient):
    first_line_read = asyncio.Event()
    api.handler = streaming(b"2024-01-01T00:00:00.000000001Z line one\n2024-",
                            first_line_read.wait, b"01-01T00:00:01Z line two\n")
    path = PODS.path("ns", "p", "log")
    lines = []
    async with client.stream(path, {"follow": True, "timestamps": True}, read_timeout=5) as log:
        assert log.status == 200
        async for line in log.iter_lines():
            lines.append(line)
            first_line_read.set()  # the server sends the rest only now
    assert lines == [b"2024-01-01T00:00:00.000000001Z line one",
                     b"2024-01-01T00:00:01Z line two"]
    assert api.seen[0].query == {"follow": "true", "timestamps": "true"}


async def test_stream_error_status_raises_before_the_body(api: Api, client: KubeClient):
    async def missing(request: web.Request) -> web.StreamResponse:
        return web.json_response(status(404, "NotFound", 'pods "p" not found'), status=404)

    api.handler = missing
    with pytest.raises(NotFound):
        async with client.stream(PODS.path("ns", "p", "log"), {}):
            raise AssertionError("body must not be reached")


async def test_an_unframed_stream_is_asked_over_http_1_0_and_read_until_the_server_closes(
        api: Api, client: KubeClient):
    """A followed log without chunked framing: HTTP/1.0 without keep-alive, so the body is whatever
    the server sends until it closes the connection."""
    versions = []
    lines = [b"2024-01-01T00:00:00.000000001Z line %d\n" % i for i in range(50)]
    framed = streaming(*lines)

    async def handler(request: web.Request) -> web.StreamResponse:
        versions.append((request.version, request.headers.get("Connection")))
        return await framed(request)

    api.handler = handler
    async with client.stream(PODS.path("ns", "p", "log"), {"follow": True}, unframed=True) as log:
        assert "Transfer-Encoding" not in log.headers, "no chunked framing"
        body = b"".join([chunk async for chunk in log.iter_chunks()])
    assert body == b"".join(lines)
    assert versions == [((1, 0), None)], "HTTP/1.0, no 'Connection: keep-alive'"
    async with client.stream(PODS.path("ns", "p", "log"), {}) as log:  # framed: the default
        assert b"".join([chunk async for chunk in log.iter_chunks()]) == b"".join(lines)
    assert versions[1][0] == (1, 1)


async def test_a_server_refusing_http_1_0_turns_unframed_streams_off_for_the_client(api: Api, client: KubeClient):
    """A proxy that refuses HTTP/1.0 (426 Upgrade Required): the stream is asked again framed, and
    every later one goes framed at once."""
    versions = []
    framed = streaming(b"2024-01-01T00:00:00.000000001Z a line\n")

    async def handler(request: web.Request) -> web.StreamResponse:
        versions.append(request.version)
        if request.version < (1, 1):
            return web.Response(status=426, text="Upgrade Required")
        return await framed(request)

    api.handler = handler
    for _ in range(2):
        async with client.stream(PODS.path("ns", "p", "log"), {"follow": True}, unframed=True) as log:
            assert b"".join([chunk async for chunk in log.iter_chunks()]) == b"2024-01-01T00:00:00.000000001Z a line\n"
    assert versions == [(1, 0), (1, 1), (1, 1)]


def _queued(sock: Any) -> int:
    """Bytes in the socket's receive queue that nothing has read yet."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


@pytest.mark.skipif(not hasattr(socket, "SO_RCVLOWAT"), reason="no SO_RCVLOWAT on this platform")
async def test_a_gathered_read_leaves_small_pieces_in_the_socket_until_enough_are_there(
        api: Api, client: KubeClient):
    """The event loop does not read (or decrypt) the pieces one by one while a read gathers: they
    stay in the socket until ``min_bytes`` are there, and come as one chunk; after the time given,
    a read takes what is there; the server closing ends a gathered read at once."""
    piece = b"2024-01-01T00:00:00.000000001Z a short line\n"
    send_five, five_sent, send_more, close = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def after(event: asyncio.Event, then_say: asyncio.Event | None = None) -> None:
        if then_say is not None:
            then_say.set()
        await event.wait()

    many = 10_000 // len(piece) + 1
    api.handler = streaming(piece, lambda: after(send_five), *[piece] * 5, lambda: after(send_more, five_sent),
                            *[piece] * many, lambda: after(close))
    async with asyncio.timeout(30):  # a guard: every wait below is on a state
        async with client.stream(PODS.path("ns", "p", "log"), {"follow": True}, unframed=True) as log:
            assert await log.read_chunk() == piece
            sock = log._response.connection.transport.get_extra_info("socket")
            gathered = asyncio.ensure_future(log.read_gathered(10_000, 3600))
            send_five.set()
            await five_sent.wait()
            while _queued(sock) < 5 * len(piece) and not gathered.done():
                await asyncio.sleep(0)
            for _ in range(50):  # the loop goes round; the pieces stay where they are
                await asyncio.sleep(0)
            assert not gathered.done(), "a read of less than min_bytes ended the gathering"
            assert _queued(sock) == 5 * len(piece)
            send_more.set()
            assert await gathered == piece * (5 + many), "everything gathered, as one chunk"
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1

            close.set()
            assert await log.read_gathered(10_000, 3600) == b"", "the end is not held back"

    send_five.clear(), close.clear()
    api.handler = streaming(piece, lambda: after(send_five), b"one more\n", lambda: after(close))
    async with asyncio.timeout(30):
        async with client.stream(PODS.path("ns", "p", "log"), {"follow": True}, unframed=True) as log:
            assert await log.read_chunk() == piece
            send_five.set()
            assert await log.read_gathered(10_000, 0.01) == b"one more\n", "after the time given, what is there"
            sock = log._response.connection.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
            close.set()


# -- authentication -----------------------------------------------------------------------------


class RotatingCredentials:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.refreshed_after: list[str | None] = []

    async def authorization(self) -> str | None:
        return f"Bearer {self.tokens[0]}"

    async def refresh(self, rejected: str | None) -> None:
        self.refreshed_after.append(rejected)
        if len(self.tokens) > 1:
            self.tokens.pop(0)


def accepting(token: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        return web.json_response({"ok": True})

    return handler


async def test_a_401_refreshes_credentials_once_and_retries(api: Api) -> None:
    credentials = RotatingCredentials(["expired", "fresh"])
    api.handler = accepting("fresh")
    async with KubeClient(api.url, credentials=credentials) as kube:
        assert await kube.get(PODS, "p", namespace="ns") == {"ok": True}
    assert credentials.refreshed_after == ["Bearer expired"]
    assert [s.headers["Authorization"] for s in api.seen] == ["Bearer expired", "Bearer fresh"]


async def test_a_persistent_401_raises_unauthorized(api: Api) -> None:
    credentials = RotatingCredentials(["wrong"])
    api.handler = accepting("right")
    async with KubeClient(api.url, credentials=credentials) as kube:
        with pytest.raises(Unauthorized) as caught:
            await kube.create(JOBS, {"metadata": {"name": "j"}}, namespace="ns")
    # Retried by callers only for a bounded time (a token rotation), see controller.retry.classify.
    assert caught.value.verdict.give_up_after is not None and not is_permanent(caught.value)
    assert len(api.seen) == 2


def test_service_account_token_is_reread_at_most_once_a_minute(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    clock = SteppedClock()
    token = ServiceAccountToken(str(token_file), clock=clock)

    async def scenario() -> list[str | None]:
        seen = [await token.authorization()]
        token_file.write_text("two")
        clock.t += 59
        seen.append(await token.authorization())
        clock.t += 1
        seen.append(await token.authorization())
        token_file.write_text("three")
        await token.refresh("Bearer two")
        seen.append(await token.authorization())
        return seen

    assert asyncio.run(scenario()) == ["Bearer one", "Bearer one", "Bearer two", "Bearer three"]


def _kubeconfig(server: str) -> str:
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "first",
        "clusters": [{"name": "local", "cluster": {"server": server}}],
        "users": [{"name": "u1", "user": {"token": "token-one"}},
                  {"name": "u2", "user": {"token": "token-two"}}],
        "contexts": [{"name": "first", "context": {"cluster": "local", "user": "u1"}},
                     {"name": "second", "context": {"cluster": "local", "user": "u2"}}],
    })


@pytest.mark.parametrize(
    "context, token",
    [pytest.param(None, "token-one", id="current-context"),
     pytest.param("second", "token-two", id="named-context")],
)
async def test_from_config_uses_the_kubeconfig_server_and_token(api: Api, tmp_path, context,
                                                                token):
    path = tmp_path / "kubeconfig"
    path.write_text(_kubeconfig(api.url))
    kube = await KubeClient.from_config(str(path), context=context)
    try:
        await kube.get(PODS, "p", namespace="ns")
    finally:
        await kube.close()
    assert kube.host == api.url
    assert api.seen[0].headers["Authorization"] == f"Bearer {token}"


async def test_kubeconfig_env_wins_over_in_cluster(api: Api, tmp_path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(_kubeconfig(api.url))
    config = await load_cluster_config(
        clock=SteppedClock(),
        environ={"KUBECONFIG": str(path), "KUBERNETES_SERVICE_HOST": "10.0.0.1",
                 "KUBERNETES_SERVICE_PORT": "443"},
    )
    assert config.host == api.url and config.ssl is None
    assert await config.credentials.authorization() == "Bearer token-one"


# -- metrics ------------------------------------------------------------------------------------


async def test_on_request_reports_verb_resource_code_and_duration(api: Api) -> None:
    calls: list[tuple[str, str, str, float]] = []
    registry = CollectorRegistry()
    metrics = KubeClientMetrics(registry, host="local")

    def on_request(verb: str, resource: str, code: str, seconds: float) -> None:
        calls.append((verb, resource, code, seconds))
        metrics(verb, resource, code, seconds)

    async def reply(request: web.Request) -> web.StreamResponse:
        if request.method == "PATCH":
            return web.json_response(status(409, "Conflict", "modified"), status=409)
        return web.json_response({})

    api.handler = reply
    async with KubeClient(api.url, on_request=on_request) as kube:
        await kube.get(TASKS, "t", namespace="ns", subresource="status")
        with pytest.raises(Conflict):
            await kube.patch(JOBS, "j", {}, namespace="ns")
    assert [c[:3] for c in calls] == [("get", "tasks/status", "200"), ("patch", "jobs", "409")]
    assert all(c[3] >= 0 for c in calls)
    sample = registry.get_sample_value
    assert sample("rest_client_requests_total",
                  {"code": "409", "method": "PATCH", "host": "local"}) == 1
    assert sample("rest_client_request_duration_seconds_count",
                  {"verb": "GET", "host": "local"}) == 1
    assert sample("fabric_kube_requests_total",
                  {"verb": "get", "resource": "tasks/status", "code": "200"}) == 1
    assert sample("fabric_kube_requests_total", {"verb": "patch", "resource": "jobs", "code": "409"}) == 1


# -- TLS ----------------------------------------------------------------------------------------


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(tmp_path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=test-ca", cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "fabric-test")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=tmp_path)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
                 "-extfile", "san.ext", cwd=tmp_path)


async def test_from_config_speaks_tls_with_the_kubeconfig_ca_and_client_certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to mint test certificates")
    _make_pki(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                            cafile=str(tmp_path / "ca.crt"))
    server_tls.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    server_tls.verify_mode = ssl.CERT_REQUIRED

    async def whoami(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert")
        subject = dict(pair[0] for pair in peer["subject"])
        return web.json_response({"user": subject["commonName"]})

    app = web.Application()
    app.router.add_get("/{tail:.*}", whoami)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server(ssl=server_tls)
    try:
        url = str(server.make_url("")).rstrip("/")
        assert url.startswith("https://")
        ca_data = base64.b64encode((tmp_path / "ca.crt").read_bytes()).decode()
        (tmp_path / "kubeconfig").write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "tls",
            "clusters": [{"name": "c", "cluster": {"server": url,
                                                  "certificate-authority-data": ca_data}}],
            "users": [{"name": "u", "user": {"client-certificate": "client.crt",
                                            "client-key": "client.key"}}],
            "contexts": [{"name": "tls", "context": {"cluster": "c", "user": "u"}}],
        }))
        kube = await KubeClient.from_config(str(tmp_path / "kubeconfig"))
        try:
            assert await kube.get(PODS, "p", namespace="ns") == {"user": "fabric-test"}
        finally:
            await kube.close()
    finally:
        await server.close()


@pytest.mark.parametrize("text", [
    pytest.param("héllo 世界", id="bmp"),
    pytest.param("🌍 and 𝄞", id="outside-the-bmp"),
    pytest.param("a\u2028b\u2029c\x85d", id="yaml-line-breaks-stay-characters"),
    pytest.param("\\ud83c\\udf0d", id="escaped-backslash-is-not-an-escape"),
    pytest.param("\\🌍", id="backslash-then-emoji"),
    pytest.param('"quoted" \\ back \n tab\t', id="json-escapes"),
])
def test_apply_bodies_are_json_and_yaml_of_the_same_text(text: str) -> None:
    """Server-side apply bodies are parsed as YAML by the API server: the bytes must say the same
    text to a YAML parser (here PyYAML; the real API server in tests/e2e/test_invoke_records.py)."""
    from controller.kube.client import PATCH_CONTENT_TYPES, _encode_body

    body = {"spec": {"payload": {"t": text, "n": None}}}
    applied = _encode_body(body, PATCH_CONTENT_TYPES["apply"])
    assert yaml.safe_load(applied.decode()) == body
    assert applied.isascii()
    assert json.loads(_encode_body(body, "application/json")) == body
