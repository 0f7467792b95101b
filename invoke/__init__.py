"""The built-in invoke action, ``sys-invoke-skill``: one agent invocation per run, followed to its end.

A Task made by ``taskctl agents invoke`` or the gateway's ``POST /v1/agents/{agent}/invoke`` runs this
package (console script ``sys-invoke-skill``, or ``python -m invoke``) in the project's image. It reads
``FABRIC_PAYLOAD`` (``{agentName, input, params}``), calls the agent over the small HTTP contract in
the README ("The invoke action and the agent HTTP contract"), follows the activation to its end,
prints progress lines to stdout (the execution's log), writes one outcome object to the container's
termination message and exits 0 on success, 1 on failure, 2 on a usage error.

Modules, pure ones first (no I/O, no clock, table-tested)::

    payload.py     FABRIC_PAYLOAD text -> InvokeRequest, or PayloadError
    endpoints.py   agent name -> base URL (endpoints file, then URL template); parses the file's text
    answers.py     an agent's JSON answer -> Activation, or InvalidAnswer
    retry.py       which failures are retried, backoff with jitter, Retry-After
    outcome.py     Outcome, its termination message (<= 4096 bytes) and the exit code
    settings.py    InvokeSettings, one frozen tree, parsed only in __main__

and the parts that do I/O::

    transport.py   the one HTTP seam (``Transport``) and its aiohttp implementation; maps aiohttp
                   errors to ``TransportError(cause)`` once
    action.py      the invocation: POST, poll, retries, the deadline, on an injected ``Clock``
    __main__.py    flags and environment, the termination message file, the exit code
    example_agent.py  an agent service for the demo and the tests (``fabric-example-agent``)

The package imports nothing from ``controller`` but its leaf ``controller.clock`` (no I/O), and
``controller``/``gateway``/``taskctl`` never import it: the operator reads the outcome from the
container's termination message, not from this code.
"""
