"""A parameter sweep: submit a bag of tasks, watch progress, gather.

python examples/python/bag_of_tasks.py [ENDPOINT_ID] [N]
"""

import os
import sys

import lattice
from lattice import Executor


def simulate(rate, steps=2000):
    """A tiny logistic-map simulation; returns the mean of the last 100 states."""
    x = 0.5
    history = []
    for _ in range(steps):
        x = rate * x * (1 - x)
        history.append(x)
    tail = history[-100:]
    return sum(tail) / len(tail)


def main() -> None:
    args = sys.argv[1:]
    endpoint_id = args[0] if args else os.environ.get("LATTICE_ENDPOINT_ID") or lattice.Client().endpoint_id("local")
    n = int(args[1]) if len(args) > 1 else 200
    rates = [2.5 + 1.5 * i / (n - 1) for i in range(n)]
    with Executor(endpoint_id=endpoint_id) as ex:
        futures = [ex.submit(simulate, r) for r in rates]
        lattice.progress(futures, desc="sweep")
        results = [f.result() for f in futures]
    for rate, mean in list(zip(rates, results))[:: max(1, n // 10)]:
        print(f"rate {rate:.3f}: mean {mean:.4f}")


if __name__ == "__main__":
    main()
