"""SIGTERM during a download: the process ends through its `finally` clauses (exit 143, one
line), so that the partial file is removed; SIGTERM's default action would end it on the spot.
"""
import contextlib
import signal
import sys
import threading

_TERMINATIONS = []  # the innermost download's SIGTERM state: {'pending': signum, 'now': bool}


@contextlib.contextmanager
def sigterm_unwinds():
    """SIGTERM during a download ends the process through its `finally` clauses (exit 143,
    one line), so that the partial file is removed: its default action ends it on the spot.

    The exception is raised at once only where the download waits on the network
    (`interruptible`); elsewhere the signal is held until the next such wait or the end, so
    that it never lands between creating a temporary and the `try` that removes it, nor inside
    a library's constructor (a half-built tqdm prints a traceback when collected)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {'pending': None, 'now': False}

    def stop(signum, frame):
        state['pending'] = signum
        if state['now']:
            _terminate(state)
    previous = signal.signal(signal.SIGTERM, stop)
    _TERMINATIONS.append(state)
    try:
        yield
    finally:
        _TERMINATIONS.pop()
        signal.signal(signal.SIGTERM, previous)
        if state['pending']:
            _terminate(state)


@contextlib.contextmanager
def interruptible():
    """Where a held or arriving SIGTERM ends the download at once: a wait on the network."""
    state = _TERMINATIONS[-1] if _TERMINATIONS else {'pending': None, 'now': False}
    if state['pending']:
        _terminate(state)
    state['now'] = True
    try:
        yield
    finally:
        state['now'] = False


def _terminate(state):
    signum, state['pending'] = state['pending'], None  # one exit, however many waits it unwinds
    print('error: terminated (SIGTERM) during a download; the partial file is removed',
          file=sys.stderr)
    raise SystemExit(128 + signum)
