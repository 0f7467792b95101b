"""taskctl: the command-line tool for Fabric tasks (also the kubectl plugin ``kubectl-task``).

Charter: taskctl reads and changes Task resources for a person at a terminal. It speaks to the
task gateway's public HTTP API (``/v1``) when one is configured and to the Kubernetes API
otherwise, with the same output either way. Writes (pause, resume, delete, run, create, apply,
agents invoke) always go to the Kubernetes API: the gateway serves history, not commands.

Layering (checked by a unit test): taskctl imports ``controller.model`` (pure Task rules: names,
schedules, spec validation) and ``controller.kube`` (the API client and its error tree), never
the operator's reconcile/app/informer internals, and never ``gateway`` (it speaks HTTP to it).

Modules, lowest first:

- ``errors``       the CLI's exception tree and exit codes; one line per error, with its cause.
- ``humanize``     pure: "3 hours ago", durations, byte sizes.
- ``table``        pure: the boxed table of the design's examples, width-aware, optional colour.
- ``views``        pure: ``TaskView``/``ExecutionView``, built from a Task object or a gateway
                   record, so both backends print the same thing; their JSON form.
- ``agents``       pure: ``agents invoke`` naming (project prefix, ``_`` -> ``-``, DNS-1123) and
                   the Task it creates.
- ``render``       pure: views -> table, wide, json, yaml, name, and the describe sheet.
- ``settings``     the frozen settings tree and where each value comes from (flag, environment,
                   config file); the only module that reads files for configuration.
- ``backend``      the read-side protocol both backends implement, and the log options.
- ``kube_backend`` Task resources, Jobs, Pods and pod logs through ``controller.kube``; all writes.
- ``gateway_backend``  the gateway's ``/v1`` API over aiohttp.
- ``commands``     one function per verb, over a backend and an output stream.
- ``cli``          the argparse tree: verbs, aliases (the design's spellings), help with examples.
- ``completion``   bash and zsh completion scripts generated from the argparse tree.
- ``__main__``     argv + environment -> settings -> command -> exit code. Reads ``os.environ``.
"""
