"""What the command line shows: the project's progress and results, the libraries' notices on demand.

A training command would otherwise print Lightning's hardware lines and advertisements, the
libraries' deprecation and data-loader warnings, and every component of every metric on its
progress bar: nothing a user of this command line can act on. `quiet()` hides them for the
duration of a command (the CLI enters it unless `--debug` is given); this package's own
warnings still show. `details()` says whether the progress bars show every metric component.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

_quiet_depth = 0


def details() -> bool:
    """Whether every metric component is worth showing (not inside `quiet()`)."""
    return _quiet_depth == 0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide the libraries' warnings and INFO messages, and the metrics' components, inside."""
    global _quiet_depth
    disabled = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # what this package warns about, a user can act on
        warnings.filterwarnings("default", module=r"pyannote_wavlm_prune(\.|$)")
        # INFO lines of every logger ("GPU available: False", "Tip: ...", "`Trainer.fit`
        # stopped: ..."): Lightning sets its loggers' levels when it is imported, which a
        # command does after this point, so levels set here would not hold; this package's
        # own INFO lines have no handler and never show anyway
        logging.disable(max(disabled, logging.INFO))
        _quiet_depth += 1
        try:
            yield
        finally:
            _quiet_depth -= 1
            logging.disable(disabled)
