"""Progress bars for long loops (`encode`, `keras-egemma bench`): stderr only.

A terminal gets tqdm's bar; a notebook gets tqdm's widget; a stderr that is
neither (a log file, a pipe, CI) gets plain lines, since a redrawn bar would
fill it with carriage returns and ANSI escapes.
"""

import sys
import time


class TextProgress:
    """tqdm's `update` / `close` as plain lines: one at each tenth of the
    way and one at the end, e.g. `encode: 40/100 texts (40%, 1.2 s)`.

    Args:
        total: the count at the end.
        desc: what is counted for (the line's prefix).
        unit: the counted thing, singular.
        file: the stream to write to.

    Example:
    ```python
    progress = TextProgress(100, "encode", "text", sys.stderr)
    progress.update(40)
    progress.close()
    ```
    """

    def __init__(self, total, desc, unit, file):
        self.total, self.desc, self.unit, self.file = total, desc, unit, file
        self.n = 0
        self._tenths = 0
        self._written = -1
        self._start = time.perf_counter()

    def _write(self):
        percent = 100 * self.n // max(self.total, 1)
        units = self.unit if self.total == 1 else f"{self.unit}s"
        seconds = time.perf_counter() - self._start
        print(
            f"{self.desc}: {self.n}/{self.total} {units} ({percent}%, {seconds:.1f} s)",
            file=self.file,
            flush=True,
        )
        self._written = self.n

    def update(self, n=1):
        self.n += n
        tenths = 10 * self.n // max(self.total, 1)
        if tenths > self._tenths:
            self._tenths = tenths
            self._write()

    def close(self):
        if self._written != self.n:
            self._write()


def _in_notebook():
    """True inside a Jupyter kernel (where tqdm draws a widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def progress_bar(total, desc, unit):
    """A progress bar with tqdm's `update(n)` / `close()`, never on stdout.

    Args:
        total: the count at the end.
        desc: what is counted for, e.g. `"encode"`.
        unit: the counted thing, singular, e.g. `"text"`.

    Returns:
        tqdm's widget in a notebook, tqdm's bar on stderr when stderr is a
        terminal, else a `TextProgress` writing plain lines to stderr.

    Example:
    ```python
    progress = progress_bar(len(texts), "encode", "text")
    for batch in batches:
        progress.update(len(batch))
    progress.close()
    ```
    """
    if _in_notebook():
        # Imported here: without ipywidgets, tqdm.auto warns as it imports.
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
    is_terminal = getattr(sys.stderr, "isatty", None)
    if is_terminal is not None and is_terminal():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
    return TextProgress(total, desc, unit, sys.stderr)
