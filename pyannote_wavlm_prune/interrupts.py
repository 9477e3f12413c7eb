"""SIGTERM and SIGINT: stop at once with the signal's exit status, never inside a write that
must be whole.

`stop_on_signals()`, which the command line enters, turns SIGTERM (what `timeout`, job
schedulers and `kill` send) and SIGINT (Ctrl-C) into an `Interrupted` exception raised where
the program is, so that the writers' clean-up runs (a temporary file or staging directory is
removed, see `files`), and the command ends with 128 + the signal's number, the status a
shell reports for a process the signal ended. Whatever a library makes of the signal on the
way up (Lightning turns SIGTERM into a SystemExit without code, which would exit with 0, and
a KeyboardInterrupt into `sys.exit(1)`), it leaves as `Interrupted`. The next run of the same
command resumes (a training stage from its last checkpoint).

`uninterrupted()` marks the few steps that must finish once begun (the checkpoints of an
epoch and their history, a directory renamed into place): a signal that arrives inside waits
for its end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT was received: the command stops (a KeyboardInterrupt, so that the
    libraries' own clean-up on Ctrl-C runs for both)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as shells report a process a signal ended (143, 130)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return (f"interrupted by {signal.Signals(self.signum).name}: run the same command "
                "again to resume")


class _State:
    owner: int | None = None  # the process whose handlers are installed
    received: int | None = None  # the first signal received
    raised = False  # whether `Interrupted` was raised for it
    deferring = 0  # depth of `uninterrupted()` sections


_state = _State()


def received() -> int | None:
    """The signal received since `stop_on_signals()` was entered, or None."""
    return _state.received


def _handle(signum: int, frame) -> None:
    if os.getpid() != _state.owner:
        # a forked worker (a data loader's) inherited the handler: the default behaviour
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _state.received is not None:
        return  # already stopping: let the clean-up finish
    _state.received = signum
    if _state.deferring == 0:
        _state.raised = True
        raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise `Interrupted` on SIGTERM and SIGINT inside, and out of it whatever the signal
    became on the way (or when it was swallowed); the previous handlers are restored after.

    Only in the main thread (where Python runs signal handlers), and only once per process:
    a nested call leaves the outer one in charge.
    """
    if threading.current_thread() is not threading.main_thread() or _state.owner is not None:
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _state.owner, _state.received, _state.raised, _state.deferring = os.getpid(), None, False, 0
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    try:
        yield
    except Interrupted:
        raise
    except BaseException as error:
        if _state.received is not None:
            raise Interrupted(_state.received) from error
        raise
    else:
        if _state.received is not None:
            raise Interrupted(_state.received)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        _state.owner, _state.received, _state.raised = None, None, False


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Defer `Interrupted` to the end of the section (when `stop_on_signals` is active)."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if _state.deferring == 0 and _state.received is not None and not _state.raised:
        _state.raised = True
        raise Interrupted(_state.received)
