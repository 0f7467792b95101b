"""The Fabric task gateway: task history, execution logs and retention, outside the cluster.

An optional microservice. The operator reports every Task and execution to it over the internal
HTTP API (``/internal``, bearer token) and streams each pod's log into it; users read the history
and the logs through the public API (``/v1``). The operator keeps working without it. The gateway
imports only ``controller.kube`` (the Kubernetes API client) and ``controller.model`` (pure) of
the operator's package, for the schedule operations, never the operator's internals (reconcile,
app, informer, logs); the operator never imports the gateway.

Layers, outermost first; a layer imports only the ones below it:

- ``__main__``        parses flags and environment into one ``Settings`` tree, configures logging,
                      runs ``server.serve``. The only place that reads ``os.environ`` or argv.
- ``server``          wires stores, routes, middleware and the sweeper into one aiohttp app; owns
                      every background task and the order of shutdown.
- ``api_internal``,   HTTP handlers: parse and validate a request, call a store, shape the answer.
  ``api_public``,     Errors from below are ``errors.GatewayError`` and become JSON here (in
  ``api_schedule``,   ``server``'s middleware), nowhere else.
  ``ops``
- ``follow``          following a growing log: per-execution wake-ups and the chunk stream.
- ``kube``            the schedule operations through ``controller.kube.KubeClient``; maps its
                      errors into ``errors`` once.
- ``openapi``         the hand-written OpenAPI 3 document of every route above (pure data).
- ``retention``       the sweeper: removes a record and its log blob together once expired.
- ``records``         the ``RecordStore`` protocol and the list query; ``records_sqlite`` and
                      ``records_postgres`` implement it; ``migrations`` holds the versioned schema.
- ``blobs``           the ``BlobStore`` protocol for execution logs; ``blobs_local`` implements it
                      on a local directory (``tasks/<execution>/log.txt`` plus a line index).
- ``logindex``,       pure: the line-index format and its incremental builder; answering row
  ``logrows``         queries over an indexed log through a small read interface. No I/O of their
                      own, so they are table-tested without files or servers.
- ``model``           pure: names, record validation and conversion, cursors, time parsing.
- ``settings``, ``errors``, ``clock``, ``metrics``: leaves imported by everything above.
"""
