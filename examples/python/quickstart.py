"""The Globus Compute quickstart, on Lattice: only the import changes.

Run `lattice dev` in another shell first (it writes the profile this script
reads), then: python examples/python/quickstart.py [ENDPOINT_ID]
"""

import os
import sys

import lattice
from lattice import Executor, ShellFunction


def hello_world():
    return "Hello World!"


def main() -> None:
    endpoint_id = (sys.argv[1:] or [os.environ.get("LATTICE_ENDPOINT_ID")])[0]
    if not endpoint_id:
        endpoint_id = lattice.Client().endpoint_id("local")
    with Executor(endpoint_id=endpoint_id) as gce:
        future = gce.submit(hello_world)
        print(future.result())

        print(list(gce.map(lambda x: x * x, range(5))))

        bf = ShellFunction('echo "{message}"')
        print(gce.submit(bf, message="hello from the shell").result().stdout, end="")

        try:
            gce.submit(lambda: 1 / 0).result()
        except ZeroDivisionError as e:
            print("remote error re-raised here:", repr(e))


if __name__ == "__main__":
    main()
