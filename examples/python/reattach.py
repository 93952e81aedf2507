"""Futures that survive a restart: submit under a task group, lose the
process, get the results back from a new one.

python examples/python/reattach.py submit    # prints a task group id, exits at once
python examples/python/reattach.py collect GROUP_ID
"""

import os
import sys

import lattice
from lattice import Executor


def slow_square(x):
    import time

    time.sleep(1)
    return x * x


def main() -> None:
    endpoint_id = os.environ.get("LATTICE_ENDPOINT_ID") or lattice.Client().endpoint_id("local")
    if sys.argv[1:2] == ["submit"]:
        ex = Executor(endpoint_id=endpoint_id)
        for i in range(4):
            ex.submit(slow_square, i)
        ex.shutdown(wait=False)  # results keep landing server-side
        while ex.stats["tasks_submitted"] < 4:
            __import__("time").sleep(0.01)
        print(ex.task_group_id)
        os._exit(0)  # like a kernel restart: nothing waits for the results
    elif sys.argv[1:2] == ["collect"]:
        with Executor(endpoint_id=endpoint_id, task_group_id=sys.argv[2]) as ex:
            print([f.result() for f in ex.reload_tasks()])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
