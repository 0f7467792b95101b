"""The flood harness: many Tasks with large logs through a cluster, measured against baselines
taken in the same run (``python -m perf.flood --profile quick|full|burst1000``; perf/README.md).

Modules, outermost first: ``__main__`` (flags) > ``run`` (one run, start to cleanup) >
``tracker`` (watches Tasks, Jobs, Pods), ``baselines`` (curl, kubectl, direct Job creates),
``verify`` (sha256 of every landed log), ``sampler`` (/proc and /metrics over time), ``procs``
(operator and gateway processes) , ``logsource`` (what each pod writes) > ``profile``,
``summary`` (pure: no I/O) ; ``report`` writes JSON, Markdown and PNGs from a finished summary.
Nothing here is imported by the operator, the gateway or taskctl.
"""
