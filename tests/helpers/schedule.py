"""How `make test` shares the tests among pytest-xdist workers (`pytest -n auto`; plugged in by conftest.py).

- A unit test is scheduled on its own: each is cheap, and any worker can take the next one.
- An integration or e2e file runs whole on one worker, so its module fixtures (a served champion, a
  SparkSession, a trained store) are built once; the files that send requests to the session's
  `http_server` run together on one worker, so it starts once. (`--dist loadgroup` would say this with
  `xdist_group` marks, but pytest-xdist 3.8 cannot add the group to a node id under pytest 9.2.)
- The longest file starts first, on its own worker (Spark, which needs none of the shared builds), while the
  other worker builds what the rest share (CDNOW, the champion) instead of waiting for it.
- Heavy work is not queued behind heavy work: a worker only ever sees its next test before it may start the
  current one, so while it runs a file the next thing it is promised is a single unit test, and it takes
  the next file from the queue (in collection order: e2e, integration, then unit) once it is done.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

# the files whose tests use the session's `http_server` (tests/conftest.py checks the list)
HTTP_SERVER_FILES = ("tests/e2e/test_bad_input.py", "tests/e2e/test_reliability_api.py")
LONGEST_FIRST = ("tests/e2e/test_spark.py",)


def scope(nodeid: str) -> str:
    """The unit of work a test belongs to: itself (unit tier), `http_server`, or its file."""
    path = nodeid.split("::", 1)[0]
    if path.startswith("tests/unit/"):
        return nodeid
    return "http_server" if path in HTTP_SERVER_FILES else path


def _is_single(name: str) -> bool:
    return name.startswith("tests/unit/")


class TierScheduling(LoadScopeScheduling):
    """Load-scope scheduling with the scopes above, in collection order, heavy files never promised ahead."""

    def __init__(self, config, log=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, log)
        config.option.loadscopereorder = False  # collection order: the heavy tiers come first

    def _split_scope(self, nodeid: str) -> str:
        return scope(nodeid)

    def _assign_work_unit(self, node: WorkerController) -> None:
        running = self.assigned_work.get(node, {})
        busy = any(not _is_single(name) and not all(tests.values()) for name, tests in running.items())
        if busy:  # promise a cheap single test, not the next file
            first = next((name for name in self.workqueue if _is_single(name)), None)
        else:
            first = next((name for name in LONGEST_FIRST if name in self.workqueue), None)
        if first is not None:
            self.workqueue.move_to_end(first, last=False)
        super()._assign_work_unit(node)
