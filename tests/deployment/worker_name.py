"""``hostname_callable`` of the Celery deployment's workers: the name each worker was started with.

Both workers run on one machine, so the default (the machine's FQDN) would not tell them apart.
"""

from __future__ import annotations

import os


def hostname() -> str:
    return os.environ.get("PHONESTATUS_TEST_WORKER") or "unnamed-worker"
