"""``lattice.progress(futures)``: a live progress bar (tqdm; a widget in
Jupyter when ipywidgets is installed, text otherwise) while futures finish."""

from __future__ import annotations

import concurrent.futures
from typing import Any, Iterable, List, Optional


def progress(futures: Iterable[concurrent.futures.Future], *, desc: Optional[str] = "tasks",
             timeout: Optional[float] = None, **tqdm_options: Any) -> List[concurrent.futures.Future]:
    """Shows a progress bar until every future is done (or ``timeout``
    seconds pass) and returns the futures in their original order. Failed
    futures count as done; the bar's postfix counts them."""
    from tqdm.auto import tqdm

    futures = list(futures)
    failed = 0
    with tqdm(total=len(futures), desc=desc, unit="task", **tqdm_options) as bar:
        for future in concurrent.futures.as_completed(futures, timeout=timeout):
            if future.cancelled() or future.exception() is not None:
                failed += 1
                bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
    return futures
