"""Reconciling Tasks.

``loop`` runs reconciles from the workqueue on N workers and maps each outcome to what the queue
does next (controller-runtime semantics). ``task`` is the Task reconciler itself: it reads the
informer caches, decides with the pure ``controller.model`` functions, and writes through
``controller.kube``. ``metrics`` holds the reconcile metrics with controller-runtime's names.
"""

from controller.reconcile.loop import ReconcileLoop, Result

__all__ = ["ReconcileLoop", "Result"]
