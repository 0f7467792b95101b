"""The Fabric task operator.

Reconciles ``Task`` resources (group ``fabric.dev``) into Kubernetes Jobs and CronJobs, follows the
Jobs and Pods they cause, and reports every execution on the Task's status and as Events.

Layers, outermost first; a layer imports only the ones below it:

- ``__main__``      parses flags and environment into one ``Settings`` tree and runs ``app``.
- ``app``           wires informers, the workqueue, reconcilers and the operations server together;
                    owns every background task and shuts them down in order.
- ``reconcile``     one reconcile of one Task: reads the caches, decides, writes through ``kube``.
- ``informer``      list + watch with client-go semantics into an indexed cache of raw dicts.
- ``workqueue``     dedup queue, delays, rate limiters (client-go semantics); no Kubernetes.
- ``kube``          the only module that speaks HTTP to the API server; owns the error tree.
- ``model``         pure: Task spec validation, schedules, Task -> Job/CronJob manifests,
                    status computation. No I/O, no clock reads (time is passed in).
- ``clock``         time, injected everywhere so tests step it instead of sleeping.
"""
