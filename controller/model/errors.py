"""The model's one exception: a Task whose spec cannot be run as written.

``InvalidTask`` is permanent: retrying the same spec cannot succeed, so the reconciler records it on
the Task (phase ``Invalid``) instead of requeueing, and the user fixes the spec.
"""

from __future__ import annotations


class InvalidTask(ValueError):
    """A Task field that cannot be accepted.

    Constructed as ``InvalidTask(detail, field)``:

    - ``field``   the JSON path of the offending field (``spec.schedule``, ``metadata.name``);
    - ``detail``  what is wrong and how to fix it, without the path;
    - ``message`` (also ``str(error)``) the text for users, Events and the Task's status:
      ``"spec.schedule: invalid cron expression '61 * * * *': minute 61 out of range 0-59 (field 1)"``.
    """

    def __init__(self, detail: str, field: str) -> None:
        self.detail = detail
        self.field = field
        self.message = f"{field}: {detail}" if field else detail
        super().__init__(self.message)

    def __reduce__(self):  # keep pickling/copying working with the two-argument constructor
        return (type(self), (self.detail, self.field))
