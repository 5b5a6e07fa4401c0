# SPDX-License-Identifier: LGPL-2.1-or-later
#
# PyGObject overrides for Dc: the code a pool runs reports a Python
# exception to the caller with its type, message and traceback; a call
# with progress passes user data to its callbacks.

import functools
import traceback

from gi.repository import GLib

from ..module import get_introspection_module
from ..overrides import override

Dc = get_introspection_module('Dc')

__all__ = []


def _exception_name(exc):
    """The exception's type as Python's own tracebacks spell it."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ('builtins', '__main__'):
        name = '%s.%s' % (cls.__module__, name)
    return name


def _failed_error(exc):
    """A GLib.Error FAILED for @exc, raised by the code in a worker: its
    message is "Type: message", then the traceback."""
    name = _exception_name(exc)
    try:
        text = str(exc)
    except Exception:
        text = '<exception str() failed>'
    head = '%s: %s' % (name, text) if text else name
    # The wrapper's own frame is no part of the user's traceback.
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    trace = ''.join(traceback.format_exception(type(exc), exc, tb)).rstrip('\n')
    return GLib.Error.new_literal(Dc.DetachedCodeError.quark(), '%s\n\n%s' % (head, trace),
                                  Dc.DetachedCodeError.FAILED)


def _wrap_code(func):
    """Wraps the code a pool runs: a GLib.Error it raises keeps its domain,
    code and message; any other exception becomes a FAILED GLib.Error that
    carries its text.  What the code returns passes through unchanged."""
    if not callable(func):
        # Let PyGObject refuse it as it would without the override.
        return func

    @functools.wraps(func)
    def code(*args):
        try:
            return func(*args)
        except GLib.Error:
            raise
        except Exception as exc:
            raise _failed_error(exc) from None

    return code


class DetachedCode(Dc.DetachedCode):

    @classmethod
    def new(cls, func, *user_data):
        return Dc.DetachedCode.new(_wrap_code(func), *user_data)

    @classmethod
    def new_with_fds(cls, func, *user_data):
        return Dc.DetachedCode.new_with_fds(_wrap_code(func), *user_data)

    def call_with_progress_async(self, args, io_priority, cancellable, progress_func,
                                 callback=None, *user_data):
        """Like call_async(), for code that reports progress with
        Dc.worker_report_progress(): progress_func(pool, value, *user_data)
        runs for each value, in order and all before
        callback(pool, result, *user_data), as PyGObject passes user data to
        the callbacks of other async calls.  Finish with call_finish()."""
        def progress(source, value):
            progress_func(source, value, *user_data)

        ready = None
        if callback is not None:
            def ready(source, result):
                callback(source, result, *user_data)

        Dc.DetachedCode.call_with_progress_async(self, args, io_priority, cancellable,
                                                 progress, ready)


DetachedCode = override(DetachedCode)
__all__.append('DetachedCode')
