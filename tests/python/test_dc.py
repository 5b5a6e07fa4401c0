#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Drives DcDetachedCode through PyGObject and the built typelib.  The code
# under test runs in forked copies of this interpreter, so every worker
# function below executes in another process: it can only report back
# through its return value or an error.

import gc
import json
import os
import resource
import socket
import sys
import tempfile
import threading
import time
import traceback
import unittest

import gi

import tree_overrides  # noqa: E402  (before Dc: the overrides of this tree)

gi.require_version('GLib', '2.0')
gi.require_version('Gio', '2.0')
gi.require_version('Dc', '1.0')
from gi.repository import Dc, Gio, GLib  # noqa: E402

# Waits are bounded by this, never by how fast a worker is: a loaded
# two-core machine may take seconds to schedule a fork.
TIMEOUT_S = 60

# Some cases crash a worker on purpose; keep their core files out of the
# build tree.  Workers inherit the limit.
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def is_prime(n):
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


class Outcome:
    """What one call_async ended with: a value or a GLib.Error, and for a
    call with descriptors the Gio.UnixFDList that came back, if any."""

    def __init__(self, value=None, error=None, fd_list=None):
        self.value = value
        self.error = error
        self.fd_list = fd_list

    def __repr__(self):
        if self.error is not None:
            return 'Outcome(error=%s:%d:%r)' % (self.error.domain, self.error.code,
                                               self.error.message)
        return 'Outcome(value=%r)' % (self.value,)


class DcTestCase(unittest.TestCase):

    def make_pool(self, func, *user_data):
        pool = Dc.DetachedCode.new(func, *user_data)
        self.addCleanup(pool.shutdown)
        return pool

    def spin_until(self, predicate, what, timeout=TIMEOUT_S):
        """Runs the main loop until predicate() holds; fails after timeout."""
        deadline = time.monotonic() + timeout
        context = GLib.MainContext.default()
        # The wake-up bounds how long a blocking iteration may sleep when no
        # source of the pool fires; it costs latency, never correctness.
        wakeup = GLib.timeout_add(20, lambda: GLib.SOURCE_CONTINUE)
        try:
            while not predicate():
                if time.monotonic() > deadline:
                    self.fail('timed out after %d s waiting for %s' % (timeout, what))
                context.iteration(True)
        finally:
            GLib.source_remove(wakeup)

    def call(self, pool, args, priority=GLib.PRIORITY_DEFAULT, sink=None,
             cancellable=None):
        """Starts a call; returns the list its Outcome will be appended to."""
        if sink is None:
            sink = []

        # Assertions inside a PyGObject callback would only be printed, so
        # the callback just records and the test asserts afterwards.
        def done(source, result):
            try:
                sink.append(Outcome(value=source.call_finish(result)))
            except GLib.Error as e:
                sink.append(Outcome(error=e))

        pool.call_async(args, priority, cancellable, done)
        return sink

    def call_sync(self, pool, args):
        sink = self.call(pool, args)
        self.spin_until(lambda: len(sink) == 1, 'one call to complete')
        return sink[0]

    def make_fd_pool(self, func, *user_data):
        pool = Dc.DetachedCode.new_with_fds(func, *user_data)
        self.addCleanup(pool.shutdown)
        return pool

    def call_fds(self, pool, args, fd_list, sink=None):
        """Like call(), with descriptors; the Outcome carries those returned."""
        if sink is None:
            sink = []

        def done(source, result):
            try:
                value, out_fd_list = source.call_with_unix_fd_list_finish(result)
                sink.append(Outcome(value=value, fd_list=out_fd_list))
            except GLib.Error as e:
                sink.append(Outcome(error=e))

        pool.call_with_unix_fd_list_async(args, fd_list, GLib.PRIORITY_DEFAULT, None, done)
        return sink

    def call_fds_sync(self, pool, args, fd_list):
        sink = self.call_fds(pool, args, fd_list)
        self.spin_until(lambda: len(sink) == 1, 'one call with descriptors to complete')
        return sink[0]

    def assertValue(self, outcome):
        if outcome.error is not None:
            self.fail('call failed: %s (%s, %d)' % (outcome.error.message,
                                                    outcome.error.domain,
                                                    outcome.error.code))
        return outcome.value.unpack()

    def assertDcError(self, outcome, code):
        self.assertIsNotNone(outcome.error, 'call succeeded: %r' % (outcome,))
        self.assertEqual(outcome.error.domain, 'dc-detached-code-error-quark')
        self.assertTrue(outcome.error.matches(Dc.DetachedCodeError.quark(), code),
                        'expected code %d, got %r' % (int(code), outcome))

    def assertCancelled(self, outcome):
        self.assertIsNotNone(outcome.error, 'call succeeded: %r' % (outcome,))
        self.assertTrue(outcome.error.matches(Gio.io_error_quark(), Gio.IOErrorEnum.CANCELLED),
                        'expected G_IO_ERROR_CANCELLED, got %r' % (outcome,))

    def make_dir(self):
        directory = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self.addCleanup(directory.cleanup)
        return directory.name

    def release(self, directory):
        with open(os.path.join(directory, 'release'), 'w'):
            pass

    def wait_started(self, directory, i):
        path = os.path.join(directory, 'started-%d' % i)
        self.spin_until(lambda: os.path.exists(path), 'call %d to start in a worker' % i)

    def wait_gone(self, pid):
        # Signal 0 reaches a zombie too: the pid disappears only once the
        # pool's child watch has reaped it.
        def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        self.spin_until(gone, 'process %d to disappear' % pid)

    def record_exits(self, pool):
        exited = []
        pool.connect('worker-exited', lambda _pool, pid, status: exited.append((pid, status)))
        return exited

    def wait_reaped(self, pid):
        # A zombie keeps its /proc entry until the pool's child watch reaps
        # it on the main loop; after that the pid may be reused, but not by
        # a child of ours.
        def gone():
            try:
                with open('/proc/%d/stat' % pid) as f:
                    stat = f.read()
            except FileNotFoundError:
                return True
            ppid = int(stat[stat.rindex(')') + 2:].split()[1])
            return ppid != os.getpid()

        self.spin_until(gone, 'worker %d to be reaped' % pid)


def worker_is_prime(args, tag):
    (n,) = args.unpack()
    return GLib.Variant('(bis)', (is_prime(n), os.getpid(), tag))


def worker_echo_pid(args):
    (i, delay_ms) = args.unpack()
    if delay_ms:
        time.sleep(delay_ms / 1000.0)
    return GLib.Variant('(ii)', (i, os.getpid()))


def worker_behave(args):
    (what,) = args.unpack()
    if what == 'gerror':
        raise GLib.Error.new_literal(Gio.io_error_quark(), 'nope',
                                     Gio.IOErrorEnum.NOT_FOUND)
    if what == 'value-error':
        raise ValueError('not a GLib.Error')
    if what == 'none':
        return None
    if what == 'exit3':
        os._exit(3)
    if what == 'say-exit3':
        sys.stderr.write('first words\nlast words from python\n')
        sys.stderr.flush()
        os._exit(3)
    return GLib.Variant('(si)', (what, os.getpid()))


def raise_value_error(what):
    raise ValueError('bad input: %s' % what)


TEST_QUARK = 'dc-test-python-error-quark'


def worker_raise(args):
    (what,) = args.unpack()
    if what == 'value-error':
        raise_value_error('nested')
    if what == 'module-error':
        # An exception class outside builtins is named with its module.
        json.loads('{')
    if what == 'empty':
        raise SilentError()
    if what == 'custom-gerror':
        raise GLib.Error.new_literal(GLib.quark_from_string(TEST_QUARK), 'custom failure', 7)
    if what == 'dc-gerror':
        raise GLib.Error.new_literal(Dc.DetachedCodeError.quark(), 'raised as SPAWN',
                                     Dc.DetachedCodeError.SPAWN)
    return GLib.Variant('(s)', (what,))


class SilentError(Exception):
    """An exception without a message."""


def worker_fds_raise(args, fd_list):
    (what,) = args.unpack()
    if what == 'raise':
        raise RuntimeError('no descriptors today')
    return GLib.Variant('(s)', (what,)), None


def worker_sandboxed(args):
    # Everything it needs is imported already: under DC_SANDBOX_ALL, with
    # no path listed, the worker opens no file.
    (what,) = args.unpack()
    if what == 'exec':
        os.execv('/bin/true', ['true'])
    if what == 'socket':
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    if what == 'open':
        try:
            with open('/etc/passwd', 'rb'):
                return GLib.Variant('(si)', ('opened', os.getpid()))
        except PermissionError:
            return GLib.Variant('(si)', ('denied', os.getpid()))
    return GLib.Variant('(si)', ('%s %d' % (what, sum(range(10))), os.getpid()))


def worker_environment(args):
    # os.environ is a dict the interpreter filled at start-up; the pool's
    # setenv() acts on the C environment after the fork, which only
    # getenv(3) (here GLib.getenv) sees.
    names = args.unpack()[0]
    return GLib.Variant('(ams)', ([GLib.getenv(name) for name in names],))


def worker_cwd(args):
    return GLib.Variant('(s)', (os.getcwd(),))


def worker_touch_then_sleep(args):
    (directory, i) = args.unpack()
    with open(os.path.join(directory, 'started-%d' % i), 'w'):
        pass
    # Only shutdown() ends this; the sleep is bounded so that a broken
    # shutdown leaves no worker behind for long.
    time.sleep(TIMEOUT_S)
    return GLib.Variant('(i)', (i,))


def worker_identity(args):
    return args


def worker_meddle(args, holder):
    # The worker holds a copy of the parent's pool object and default main
    # context, and a binding's garbage collector may dispose the copy at any
    # time; none of this may reach the parent's processes or the channel.
    pool = holder[0]
    pool.shutdown()
    pool.run_dispose()
    GLib.idle_add(lambda: GLib.SOURCE_REMOVE)
    GLib.MainContext.default().wakeup()
    gc.collect()
    return GLib.Variant('(i)', (os.getpid(),))


# Read by worker_generation in the worker's copy of this module; the test
# changes it in the parent.
GENERATION = 1


def worker_generation(args):
    return GLib.Variant('(ii)', (GENERATION, os.getpid()))


def worker_gate(args):
    # Leaves a trace that the call ran; a waiting call then blocks until the
    # test creates the release file, so whether a call is running, queued or
    # done never depends on how fast the machine is.
    (directory, i, wait) = args.unpack()
    with open(os.path.join(directory, 'started-%d' % i), 'w'):
        pass
    if wait:
        release = os.path.join(directory, 'release')
        deadline = time.monotonic() + TIMEOUT_S
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
    return GLib.Variant('(ii)', (i, os.getpid()))


def gate_args(directory, i, wait=False):
    return GLib.Variant('(sib)', (directory, i, wait))


def pipe_holding(data):
    """The read end of a pipe that holds data and whose write end is closed."""
    r, w = os.pipe()
    try:
        os.write(w, data)
    finally:
        os.close(w)
    return r


def read_all(fd):
    """Reads fd to its end and closes it: pass a descriptor of your own,
    such as the duplicate that Gio.UnixFDList.get() returns."""
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                return b''.join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def fd_list_of(*fds):
    # The list takes the descriptors over: it closes them when it is freed.
    return Gio.UnixFDList.new_from_array(list(fds))


def open_fd_count():
    return len(os.listdir('/proc/self/fd'))


def read_only_memfd_mappings():
    """Lines of /proc/self/maps that map a memfd shared and read-only."""
    found = []
    with open('/proc/self/maps') as f:
        for line in f:
            perms = line.split()[1]   # such as r--s: read, no write, shared
            if '/memfd:' in line and perms[1] == '-' and perms[3] == 's':
                found.append(line)
    return found


def bytes_variant(data):
    # GLib.Variant('ay', data) and unpack() go through one Python int per
    # byte, seconds for a MiB; these two keep the bytes in one buffer.
    return GLib.Variant.new_from_bytes(GLib.VariantType.new('ay'), GLib.Bytes.new(data), True)


def variant_bytes(value):
    return value.get_data_as_bytes().get_data()


def worker_pipes(args, fd_list):
    # A DcCodeFdFunc: PyGObject maps its (out) out_fd_list to the second
    # member of the returned tuple.  fd_list.get() returns a duplicate,
    # which this function owns; the list's own copies close with the list.
    what = args.get_child_value(0).get_string()
    handles = args.get_child_value(1).unpack()
    padding = args.get_child_value(2)
    if what == 'gerror':
        raise GLib.Error.new_literal(Gio.io_error_quark(), 'nope', Gio.IOErrorEnum.NOT_FOUND)
    if what == 'exit3':
        os._exit(3)
    # Counted on entry, so that a descriptor kept from an earlier call
    # shows in a later one.
    n_open = open_fd_count()
    texts = [read_all(fd_list.get(h)).decode() for h in handles]
    result = GLib.Variant.new_tuple(GLib.Variant('as', texts), padding,
                                    GLib.Variant('i', n_open), GLib.Variant('i', os.getpid()))
    return result, fd_list_of(pipe_holding(b'from the worker'))


def pipes_args(what, handles=(), padding=b''):
    return GLib.Variant.new_tuple(GLib.Variant('s', what), GLib.Variant('ah', list(handles)),
                                  bytes_variant(padding))


def worker_fd_shapes(args, fd_list):
    (what,) = args.unpack()
    if what == 'no-list':
        return GLib.Variant('(sb)', (what, fd_list is None)), None
    if what == 'bare':
        # Not a (value, out_fd_list) pair: see test_fd_func_returns_a_pair.
        return GLib.Variant('(sb)', (what, fd_list is None))
    if what == 'pipe-back':
        return GLib.Variant('(sb)', (what, fd_list is None)), fd_list_of(pipe_holding(b'x'))
    if what == 'too-many':
        out = Gio.UnixFDList()
        for _ in range(300):
            out.append(0)   # appends a duplicate
        return GLib.Variant('(sb)', (what, fd_list is None)), out
    return GLib.Variant('(si)', (what, os.getpid())), None


def worker_memfd_echo(args):
    # Reports whether the arguments arrived in a read-only shared mapping
    # of a memfd, while they are still held.
    return GLib.Variant.new_tuple(args.get_child_value(0),
                                  GLib.Variant('b', bool(read_only_memfd_mappings())))


def worker_progress(args):
    # Reports 0 .. n-1, sleeping between when asked to, then returns n.
    n, ms = args.unpack()
    for i in range(n):
        Dc.worker_report_progress(GLib.Variant('(u)', (i,)))
        if ms:
            time.sleep(ms / 1000)
    return GLib.Variant('(u)', (n,))


class ProgressRecord:
    """What a call with progress delivered: the values, how many had come
    when the callback ran, the outcome; the callbacks only record."""

    def __init__(self):
        self.values = []
        self.at_callback = None
        self.outcomes = []
        self.after_callback = False
        self.user_data = []


class TestProgress(DcTestCase):

    def call_progress(self, pool, args, cancellable=None, on_progress=None, *user_data):
        record = ProgressRecord()

        def progress(source, value, *data):
            record.values.append(value.unpack()[0])
            record.user_data.append(data)
            record.after_callback = record.after_callback or bool(record.outcomes)
            if on_progress is not None:
                on_progress(record)

        def done(source, result, *data):
            record.at_callback = len(record.values)
            record.user_data.append(data)
            try:
                record.outcomes.append(Outcome(value=source.call_finish(result)))
            except GLib.Error as e:
                record.outcomes.append(Outcome(error=e))

        pool.call_with_progress_async(args, GLib.PRIORITY_DEFAULT, cancellable, progress, done,
                                      *user_data)
        return record

    def test_order_all_before_callback_none_after(self):
        pool = self.make_pool(worker_progress)
        record = self.call_progress(pool, GLib.Variant('(uu)', (300, 0)))
        self.spin_until(lambda: record.outcomes, 'a call with progress')
        self.assertEqual(self.assertValue(record.outcomes[0]), (300,))
        self.assertEqual(record.at_callback, 300)
        self.assertEqual(record.values, list(range(300)))
        self.assertValue(self.call_sync(pool, GLib.Variant('(uu)', (0, 0))))
        self.assertEqual(len(record.values), 300)
        self.assertFalse(record.after_callback)

    def test_user_data_reaches_both_callbacks(self):
        pool = self.make_pool(worker_progress)
        record = self.call_progress(pool, GLib.Variant('(uu)', (2, 0)), None, None, 'a', 7)
        self.spin_until(lambda: record.outcomes, 'a call with progress')
        self.assertValue(record.outcomes[0])
        self.assertEqual(record.user_data, [('a', 7)] * 3)

    def test_cancel_stops_progress(self):
        pool = self.make_pool(worker_progress)
        cancellable = Gio.Cancellable()

        def cancel_on_second(record):
            if len(record.values) == 2:
                cancellable.cancel()

        record = self.call_progress(pool, GLib.Variant('(uu)', (100, 20)), cancellable,
                                    cancel_on_second)
        self.spin_until(lambda: record.outcomes, 'the cancelled call')
        self.assertCancelled(record.outcomes[0])
        self.assertEqual(record.values, [0, 1])
        time.sleep(0.2)
        self.assertValue(self.call_sync(pool, GLib.Variant('(uu)', (0, 0))))
        self.assertEqual(record.values, [0, 1])

    def test_plain_call_ignores_progress(self):
        pool = self.make_pool(worker_progress)
        self.assertEqual(self.assertValue(self.call_sync(pool, GLib.Variant('(uu)', (50, 0)))),
                         (50,))
        # In the parent it does nothing.
        Dc.worker_report_progress(GLib.Variant('(u)', (1,)))

    def test_progress_the_marshaller_cannot_carry(self):
        def worker(args):
            Dc.worker_report_progress(GLib.Variant('(s)', ('first',)))
            Dc.worker_report_progress(GLib.Variant('(u)', (1,)))
            return args

        pool = self.make_pool(worker)
        pool.props.marshaller = Dc.Marshaller.FLAT
        record = ProgressRecord()
        pool.call_with_progress_async(
            GLib.Variant('(s)', ('x',)), GLib.PRIORITY_DEFAULT, None,
            lambda source, value: record.values.append(value.unpack()[0]),
            lambda source, result: record.outcomes.append(self.outcome_of(source, result)))
        self.spin_until(lambda: record.outcomes, 'the call')
        error = record.outcomes[0].error
        self.assertIsNotNone(error)
        self.assertTrue(error.matches(Dc.DetachedCodeError.quark(), Dc.DetachedCodeError.MARSHAL))
        self.assertIn('progress', error.message)
        self.assertEqual(record.values, ['first'])
        # The worker goes on.
        self.assertEqual(self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('y',)))),
                         ('y',))

    @staticmethod
    def outcome_of(source, result):
        try:
            return Outcome(value=source.call_finish(result))
        except GLib.Error as e:
            return Outcome(error=e)
def worker_map(args):
    """("double", n) -> (2n); ("fail", n) raises; ("sleep", ms) -> (pid)."""
    command, n = args.unpack()
    if command == 'double':
        return GLib.Variant('(i)', (2 * n,))
    if command == 'fail':
        raise GLib.Error.new_literal(Gio.io_error_quark(), 'item %d' % n,
                                     Gio.IOErrorEnum.NOT_FOUND)
    if command == 'raise':
        raise ValueError('item %d' % n)
    if command == 'sleep':
        time.sleep(n / 1000)
        return GLib.Variant('(i)', (os.getpid(),))
    if command == 'exit':
        os._exit(n)
    raise ValueError(command)


def map_items(commands):
    return GLib.Variant('a(si)', commands)


class TestPython(DcTestCase):

    def map(self, pool, items, chunk_size=0, cancellable=None):
        """Runs a map to its end; returns its Outcome."""
        sink = []

        def done(source, result):
            try:
                sink.append(Outcome(value=source.map_finish(result)))
            except GLib.Error as e:
                sink.append(Outcome(error=e))

        pool.map_async(items, chunk_size, GLib.PRIORITY_DEFAULT, cancellable, done)
        self.assertEqual(sink, [], 'the callback ran inside map_async()')
        self.spin_until(lambda: sink, 'a map to complete')
        self.assertEqual(len(sink), 1)
        return sink[0]

    def test_map_order(self):
        pool = self.make_pool(worker_map)
        pool.props.min_workers = pool.props.max_workers = 2
        for chunk_size in (0, 1, 7, 1000):
            outcome = self.map(pool, map_items([('double', i) for i in range(300)]), chunk_size)
            self.assertValue(outcome)
            self.assertEqual(outcome.value.get_type_string(), 'av')
            self.assertEqual(outcome.value.unpack(), [(2 * i,) for i in range(300)],
                             'chunk size %d' % chunk_size)

    def test_map_empty(self):
        pool = self.make_pool(worker_map)
        outcome = self.map(pool, map_items([]))
        self.assertEqual(outcome.value.unpack(), [])

    def test_map_lowest_failure(self):
        pool = self.make_pool(worker_map)
        pool.props.min_workers = pool.props.max_workers = 2
        # Chunk 0 fails late at item 8, chunk 1 at once at item 13.
        items = [('double', i) for i in range(40)]
        items[7] = ('sleep', 300)
        items[8] = ('fail', 8)
        items[13] = ('fail', 13)
        outcome = self.map(pool, map_items(items), 10)
        self.assertTrue(outcome.error.matches(Gio.io_error_quark(), Gio.IOErrorEnum.NOT_FOUND),
                        outcome)
        self.assertEqual(outcome.error.message, 'item 8')

        # A plain exception keeps its text, through the override.
        outcome = self.map(pool, map_items([('double', 1), ('raise', 2)]))
        self.assertDcError(outcome, Dc.DetachedCodeError.FAILED)
        self.assertTrue(outcome.error.message.startswith('ValueError: item 2'), outcome)

    def test_map_worker_dies(self):
        pool = self.make_pool(worker_map)
        outcome = self.map(pool, map_items([('double', 1), ('exit', 3), ('double', 2)]), 1)
        self.assertDcError(outcome, Dc.DetachedCodeError.WORKER_DIED)
        self.assertValue(self.map(pool, map_items([('double', 1)])))

    def test_map_cancel(self):
        pool = self.make_pool(worker_map)
        self.assertTrue(pool.start())
        cancellable = Gio.Cancellable()
        GLib.timeout_add(50, lambda: cancellable.cancel() and False)
        outcome = self.map(pool, map_items([('sleep', 200)] * 20), 1, cancellable)
        self.assertCancelled(outcome)
        self.assertEqual(pool.props.n_queued, 0)

    def test_map_bad_input(self):
        pool = self.make_pool(worker_map)
        outcome = self.map(pool, GLib.Variant('(i)', (1,)))
        self.assertTrue(outcome.error.matches(Gio.io_error_quark(),
                                              Gio.IOErrorEnum.INVALID_ARGUMENT), outcome)
        pool.props.max_queued = 1
        self.assertTrue(pool.start())
        outcome = self.map(pool, map_items([('double', i) for i in range(10)]), 1)
        self.assertDcError(outcome, Dc.DetachedCodeError.BUSY)
        self.assertValue(self.map(pool, map_items([('double', 1)])))

    def test_synopsis_is_prime(self):
        # (closure user_data): extra arguments to new() reach the function.
        pool = self.make_pool(worker_is_prime, 'user data')
        not_prime = self.call(pool, GLib.Variant('(t)', (123454321,)))
        prime = self.call(pool, GLib.Variant('(t)', (1000003,)))
        self.spin_until(lambda: not_prime and prime, 'both calls')

        is_p, pid, tag = self.assertValue(not_prime[0])
        self.assertFalse(is_p, '123454321 = 11111 * 11111 is not prime')
        self.assertNotEqual(pid, os.getpid())
        self.assertEqual(tag, 'user data')
        is_p, pid2, _ = self.assertValue(prime[0])
        self.assertTrue(is_p, '1000003 is prime')
        self.assertEqual(pid, pid2, 'one worker by default')
        self.assertEqual(pool.get_worker_pids(), [pid])

    def test_several_workers(self):
        pool = self.make_pool(worker_echo_pid)
        pool.props.min_workers = 2
        pool.props.max_workers = 4
        spawned = []
        pool.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))
        self.assertTrue(pool.start())
        self.assertEqual(pool.props.n_workers, 2)

        n_calls = 60
        sink = []
        for i in range(n_calls):
            self.call(pool, GLib.Variant('(ii)', (i, 5)), sink=sink)
        self.spin_until(lambda: len(sink) == n_calls, 'all %d calls' % n_calls)

        values = [self.assertValue(o) for o in sink]
        self.assertEqual(sorted(i for i, _ in values), list(range(n_calls)))
        used = {pid for _, pid in values}
        self.assertNotIn(os.getpid(), used)
        # With one call per worker, calls queued at once cannot all land on
        # a single worker.
        self.assertGreaterEqual(len(used), 2)
        self.assertTrue(used <= set(spawned), '%r not all in %r' % (used, spawned))

        pids = pool.get_worker_pids()
        self.assertEqual(len(pids), len(set(pids)))
        self.assertTrue(2 <= len(pids) <= 4, pids)
        self.assertEqual(len(pids), pool.props.n_workers)
        self.assertNotIn(os.getpid(), pids)
        self.assertTrue(set(pids) <= set(spawned))

    def test_call_order_one_worker(self):
        pool = self.make_pool(worker_echo_pid)
        sink = []
        n_calls = 40
        for i in range(n_calls):
            # Early calls are the slowest: out-of-order completion would
            # show if the pool ever used a second worker.
            self.call(pool, GLib.Variant('(ii)', (i, 5 if i < 3 else 0)), sink=sink)
        self.spin_until(lambda: len(sink) == n_calls, 'all %d calls' % n_calls)
        values = [self.assertValue(o) for o in sink]
        self.assertEqual([i for i, _ in values], list(range(n_calls)))
        self.assertEqual(len({pid for _, pid in values}), 1)

    def test_glib_error_keeps_domain_code_message(self):
        pool = self.make_pool(worker_behave)
        outcome = self.call_sync(pool, GLib.Variant('(s)', ('gerror',)))
        self.assertIsNotNone(outcome.error)
        self.assertEqual(outcome.error.domain, 'g-io-error-quark')
        self.assertEqual(outcome.error.code, Gio.IOErrorEnum.NOT_FOUND)
        self.assertEqual(outcome.error.message, 'nope')
        self.assertTrue(outcome.error.matches(Gio.io_error_quark(), Gio.IOErrorEnum.NOT_FOUND))

    def test_python_exception_is_failed(self):
        pool = self.make_pool(worker_behave)
        # PyGObject prints the worker's traceback; it is expected noise.
        pool.props.setup_flags = Dc.SetupFlags.SILENCE_STDERR
        before = self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))

        outcome = self.call_sync(pool, GLib.Variant('(s)', ('value-error',)))
        self.assertDcError(outcome, Dc.DetachedCodeError.FAILED)
        self.assertTrue(outcome.error.message)

        # A plain None return is the same case: NULL without an error.
        outcome = self.call_sync(pool, GLib.Variant('(s)', ('none',)))
        self.assertDcError(outcome, Dc.DetachedCodeError.FAILED)

        after = self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))
        self.assertEqual(after, before, 'the worker survives a failed call')

    def assertException(self, outcome, head, frames):
        """A plain exception from the code: FAILED, "Type: message", then
        the worker's traceback through @frames."""
        self.assertDcError(outcome, Dc.DetachedCodeError.FAILED)
        message = outcome.error.message
        self.assertTrue(message.startswith(head + '\n'), message)
        self.assertIn('Traceback (most recent call last):', message)
        for frame in frames:
            self.assertIn(', in %s\n' % frame, message)
        # The traceback ends as Python prints it; the wrapper of the
        # override is not in it.
        self.assertTrue(message.endswith('\n' + head), message)
        self.assertNotIn('overrides/Dc.py', message)

    def test_overrides_of_this_tree(self):
        module = sys.modules['gi.overrides.Dc']
        self.assertEqual(os.path.dirname(os.path.abspath(module.__file__)),
                         tree_overrides.DIRECTORY)
        self.assertIs(Dc.DetachedCode, module.DetachedCode)

    def test_exception_type_message_traceback(self):
        pool = self.make_pool(worker_raise)
        before = self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))
        self.assertEqual(before, ('ok',))

        outcome = self.call_sync(pool, GLib.Variant('(s)', ('value-error',)))
        self.assertException(outcome, 'ValueError: bad input: nested',
                             ['worker_raise', 'raise_value_error'])
        self.assertIn("raise ValueError('bad input: %s' % what)", outcome.error.message)

        outcome = self.call_sync(pool, GLib.Variant('(s)', ('module-error',)))
        self.assertException(
            outcome,
            'json.decoder.JSONDecodeError: Expecting property name enclosed in double '
            'quotes: line 1 column 2 (char 1)',
            ['worker_raise'])

        # No message: the type alone, as Python prints it.
        outcome = self.call_sync(pool, GLib.Variant('(s)', ('empty',)))
        self.assertDcError(outcome, Dc.DetachedCodeError.FAILED)
        name = SilentError.__qualname__
        if SilentError.__module__ != '__main__':
            name = SilentError.__module__ + '.' + name
        self.assertTrue(outcome.error.message.startswith(name + '\n\nTraceback'),
                        outcome.error.message)

        # A value returned after all that, by the same worker.
        after = self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('still',))))
        self.assertEqual(after, ('still',))
        self.assertEqual(len(pool.get_worker_pids()), 1)

    def test_raised_glib_error_keeps_domain_and_code(self):
        pool = self.make_pool(worker_raise)
        outcome = self.call_sync(pool, GLib.Variant('(s)', ('custom-gerror',)))
        self.assertIsNotNone(outcome.error)
        self.assertEqual(outcome.error.domain, TEST_QUARK)
        self.assertEqual(outcome.error.code, 7)
        self.assertEqual(outcome.error.message, 'custom failure')

        # One of the pool's own codes, raised by the code, stays as it was.
        outcome = self.call_sync(pool, GLib.Variant('(s)', ('dc-gerror',)))
        self.assertDcError(outcome, Dc.DetachedCodeError.SPAWN)
        self.assertEqual(outcome.error.message, 'raised as SPAWN')

    def test_exception_from_fd_code(self):
        pool = self.make_fd_pool(worker_fds_raise)
        outcome = self.call_fds_sync(pool, GLib.Variant('(s)', ('raise',)), None)
        self.assertException(outcome, 'RuntimeError: no descriptors today',
                             ['worker_fds_raise'])
        outcome = self.call_fds_sync(pool, GLib.Variant('(s)', ('fine',)), None)
        self.assertIsNone(outcome.error)
        self.assertEqual(outcome.value.unpack(), ('fine',))
        self.assertIsNone(outcome.fd_list)

    def test_captured_stderr_ends_worker_died(self):
        pool = self.make_pool(worker_behave)
        pool.props.setup_flags = Dc.SetupFlags.CAPTURE_STDERR
        self.assertTrue(pool.start())
        [pid] = pool.get_worker_pids()

        outcome = self.call_sync(pool, GLib.Variant('(s)', ('say-exit3',)))
        self.assertDcError(outcome, Dc.DetachedCodeError.WORKER_DIED)
        self.assertIn('status 3', outcome.error.message)
        self.assertTrue(outcome.error.message.endswith(
            '--- last output of worker process %d ---\nfirst words\nlast words from python'
            % pid), outcome.error.message)
        self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))

    def test_worker_exit_is_worker_died(self):
        pool = self.make_pool(worker_behave)
        exited = []
        pool.connect('worker-exited', lambda _pool, pid, status: exited.append((pid, status)))
        self.assertTrue(pool.start())
        [pid] = pool.get_worker_pids()

        outcome = self.call_sync(pool, GLib.Variant('(s)', ('exit3',)))
        self.assertDcError(outcome, Dc.DetachedCodeError.WORKER_DIED)
        self.assertIn(str(pid), outcome.error.message)
        self.assertIn('status 3', outcome.error.message)
        self.assertEqual(pool.props.n_workers, 0)
        self.assertEqual(pool.get_worker_pids(), [])

        # The pool reports the exit before failing the call.
        self.assertEqual(len(exited), 1)
        self.assertEqual(exited[0][0], pid)
        self.assertTrue(os.WIFEXITED(exited[0][1]))
        self.assertEqual(os.WEXITSTATUS(exited[0][1]), 3)
        self.wait_reaped(pid)

        what, new_pid = self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))
        self.assertEqual(what, 'ok')
        self.assertNotEqual(new_pid, pid, 'a fresh worker took the call')
        self.assertEqual(pool.get_worker_pids(), [new_pid])

    def test_setenv(self):
        keep = 'DC_TEST_KEEP'
        gone = 'DC_TEST_GONE'
        os.environ[keep] = 'parent'
        os.environ[gone] = 'parent'
        self.addCleanup(os.environ.pop, keep, None)
        self.addCleanup(os.environ.pop, gone, None)

        pool = self.make_pool(worker_environment)
        pool.setenv('DC_TEST_VAR', 'hello', True)
        pool.setenv(keep, 'worker', False)
        pool.unsetenv(gone)

        outcome = self.call_sync(pool, GLib.Variant('(as)', ([
            'DC_TEST_VAR', keep, gone],)))
        (values,) = self.assertValue(outcome)
        self.assertEqual(values, ['hello', 'parent', None])

        self.assertNotIn('DC_TEST_VAR', os.environ)
        self.assertIsNone(GLib.getenv('DC_TEST_VAR'))
        self.assertEqual(GLib.getenv(gone), 'parent')

    def test_set_cwd(self):
        pool = self.make_pool(worker_cwd)
        with tempfile.TemporaryDirectory() as directory:
            pool.set_cwd(directory)
            self.assertEqual(pool.get_cwd(), directory)
            here = os.getcwd()
            (cwd,) = self.assertValue(self.call_sync(pool, None))
            self.assertEqual(os.path.realpath(cwd), os.path.realpath(directory))
            self.assertEqual(os.getcwd(), here)

    def test_shutdown_fails_every_call(self):
        pool = self.make_pool(worker_touch_then_sleep)
        pool.props.max_workers = 2
        spawned = []
        pool.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))

        with tempfile.TemporaryDirectory() as directory:
            sink = []
            n_calls = 5
            for i in range(n_calls):
                self.call(pool, GLib.Variant('(si)', (directory, i)), sink=sink)

            # Shut down only once two calls are really running, so both the
            # in-flight and the queued paths are exercised.
            self.spin_until(lambda: len(os.listdir(directory)) >= 2,
                            'two calls to start in the workers')
            self.assertEqual(sink, [], 'no call can have completed yet')
            pool.shutdown()
            self.assertEqual(pool.props.n_workers, 0)
            self.assertEqual(pool.get_worker_pids(), [])

            self.spin_until(lambda: len(sink) == n_calls, 'all calls to fail')
            for outcome in sink:
                self.assertDcError(outcome, Dc.DetachedCodeError.SHUTDOWN)
            self.assertEqual(len(os.listdir(directory)), 2,
                             'queued calls never reached a worker')

        self.assertEqual(len(spawned), 2)
        for pid in spawned:
            self.wait_reaped(pid)

    def test_flat_marshaller(self):
        pool = self.make_pool(worker_identity)
        pool.props.marshaller = Dc.Marshaller.FLAT
        self.assertEqual(pool.props.marshaller, Dc.Marshaller.FLAT)

        for args in [('abc', None), ('', 'x y\nz'), ('\u00e9t\u00e9', '')]:
            value = self.call_sync(pool, GLib.Variant('(sms)', args)).value
            self.assertIsNotNone(value)
            self.assertEqual(value.get_type_string(), '(sms)')
            self.assertEqual(value.unpack(), args)

        outcome = self.call_sync(pool, GLib.Variant('(i)', (1,)))
        self.assertDcError(outcome, Dc.DetachedCodeError.MARSHAL)

        # The refusal happened in the parent; the pool still works.
        value = self.call_sync(pool, GLib.Variant('(s)', ('still',))).value
        self.assertEqual(value.unpack(), ('still',))

    def test_flat_marshaller_refuses_result(self):
        pool = self.make_pool(lambda args: GLib.Variant('(i)', (7,)))
        pool.props.marshaller = Dc.Marshaller.FLAT
        outcome = self.call_sync(pool, GLib.Variant('(s)', ('x',)))
        self.assertDcError(outcome, Dc.DetachedCodeError.MARSHAL)

    def test_properties_and_notify(self):
        pool = self.make_pool(worker_echo_pid)
        self.assertEqual(pool.props.min_workers, 1)
        self.assertEqual(pool.props.max_workers, 1)
        self.assertEqual(pool.props.stream, Dc.Stream.AUTO)
        self.assertEqual(pool.props.marshaller, Dc.Marshaller.VARIANT)
        self.assertFalse(pool.props.exit_on_die)
        self.assertEqual(pool.props.setup_flags, Dc.SetupFlags.NONE)
        self.assertEqual(pool.props.n_workers, 0)
        self.assertEqual(pool.get_worker_pids(), [])

        notified = []
        pool.connect('notify', lambda _pool, pspec: notified.append(pspec.name))
        spawned = []
        pool.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))

        pool.props.min_workers = 2
        pool.set_max_workers(3)
        pool.props.max_workers = 3   # unchanged: explicit notify stays quiet
        pool.props.stream = Dc.Stream.PIPE
        pool.props.exit_on_die = True
        self.assertEqual(notified, ['min-workers', 'max-workers', 'stream', 'exit-on-die'])
        self.assertEqual(pool.get_min_workers(), 2)
        self.assertEqual(pool.get_max_workers(), 3)
        self.assertEqual(pool.get_stream(), Dc.Stream.PIPE)
        self.assertTrue(pool.get_exit_on_die())

        del notified[:]
        self.assertTrue(pool.start())
        self.assertIn('n-workers', notified)
        self.assertEqual(pool.props.n_workers, 2)
        self.assertEqual(len(spawned), 2)
        self.assertTrue(all(pid > 0 and pid != os.getpid() for pid in spawned))
        self.assertEqual(sorted(pool.get_worker_pids()), sorted(spawned))

        # The pipe stream carries calls as well as the socket one.
        i, pid = self.assertValue(self.call_sync(pool, GLib.Variant('(ii)', (9, 0))))
        self.assertEqual(i, 9)
        self.assertIn(pid, spawned)

        del notified[:]
        pool.shutdown()
        self.assertIn('n-workers', notified)
        self.assertEqual(pool.props.n_workers, 0)

    def test_sandbox_property(self):
        pool = self.make_pool(worker_sandboxed)
        self.assertEqual(pool.props.sandbox, Dc.SandboxFlags.NONE)
        self.assertEqual(pool.props.memory_limit, 0)
        notified = []
        pool.connect('notify', lambda _pool, pspec: notified.append(pspec.name))
        pool.props.sandbox = Dc.SandboxFlags.NO_EXEC | Dc.SandboxFlags.NO_NETWORK
        pool.set_sandbox(Dc.SandboxFlags.NO_EXEC | Dc.SandboxFlags.NO_NETWORK)
        pool.props.memory_limit = 1 << 40
        self.assertEqual(notified, ['sandbox', 'memory-limit'])
        self.assertEqual(pool.get_sandbox(),
                         Dc.SandboxFlags.NO_EXEC | Dc.SandboxFlags.NO_NETWORK)
        self.assertEqual(pool.get_memory_limit(), 1 << 40)
        self.assertEqual(Dc.SandboxFlags.ALL,
                         Dc.SandboxFlags.NO_EXEC | Dc.SandboxFlags.NO_NETWORK |
                         Dc.SandboxFlags.NO_SPAWN | Dc.SandboxFlags.NO_PROCESS_ACCESS |
                         Dc.SandboxFlags.FILESYSTEM)

    def test_sandbox_violation_is_sandbox_error(self):
        pool = self.make_pool(worker_sandboxed)
        pool.props.sandbox = Dc.SandboxFlags.ALL
        what, pid = self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))
        self.assertEqual(what, 'ok 45', 'a Python worker runs Python under DC_SANDBOX_ALL')

        outcome = self.call_sync(pool, GLib.Variant('(s)', ('exec',)))
        self.assertDcError(outcome, Dc.DetachedCodeError.SANDBOX)
        self.assertIn('Worker process %d was stopped by the sandbox: it called execve()' % pid,
                      outcome.error.message)
        self.wait_reaped(pid)

        outcome = self.call_sync(pool, GLib.Variant('(s)', ('socket',)))
        self.assertDcError(outcome, Dc.DetachedCodeError.SANDBOX)
        self.assertIn('it called socket()', outcome.error.message)

        what, new_pid = self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('open',))))
        self.assertEqual(what, 'denied')
        self.assertNotEqual(new_pid, pid)

    def test_exit_on_die(self):
        pool = self.make_pool(worker_behave)
        pool.props.exit_on_die = True
        spawned = []
        pool.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))

        outcome = self.call_sync(pool, GLib.Variant('(s)', ('gerror',)))
        self.assertTrue(outcome.error.matches(Gio.io_error_quark(), Gio.IOErrorEnum.NOT_FOUND))
        # Whenever the failed worker leaves, the next call must not notice.
        what, pid = self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))
        self.assertEqual(what, 'ok')
        self.assertEqual(len(spawned), 2)
        self.assertEqual(pid, spawned[1])
        self.wait_reaped(spawned[0])

    def test_priority_order(self):
        pool = self.make_pool(worker_echo_pid)
        self.assertTrue(pool.start())
        sink = []
        # call_async dispatches at once: the first call occupies the only
        # worker, and the rest queue whatever the worker's speed.
        self.call(pool, GLib.Variant('(ii)', (0, 0)), sink=sink)
        for i, prio in [(1, GLib.PRIORITY_LOW), (2, GLib.PRIORITY_DEFAULT),
                        (3, GLib.PRIORITY_HIGH), (4, GLib.PRIORITY_DEFAULT)]:
            self.call(pool, GLib.Variant('(ii)', (i, 0)), priority=prio, sink=sink)
        self.spin_until(lambda: len(sink) == 5, 'all calls')
        self.assertEqual([self.assertValue(o)[0] for o in sink], [0, 3, 2, 4, 1])

    def test_bare_gobject_constructor(self):
        # Dc.DetachedCode() bypasses new() and so has no function; whatever
        # the pool does about it, the call must end with a pool error.
        pool = Dc.DetachedCode()
        self.addCleanup(pool.shutdown)
        outcome = self.call_sync(pool, None)
        self.assertIsNotNone(outcome.error)
        self.assertEqual(outcome.error.domain, 'dc-detached-code-error-quark')


    def test_pool_copy_in_worker_is_inert(self):
        holder = []
        pool = self.make_pool(worker_meddle, holder)
        holder.append(pool)
        self.addCleanup(holder.clear)
        pid1 = self.assertValue(self.call_sync(pool, None))[0]
        pid2 = self.assertValue(self.call_sync(pool, None))[0]
        self.assertEqual(pid1, pid2, 'the worker survived its meddling')
        self.assertEqual(pool.get_worker_pids(), [pid1])
        self.assertEqual(pool.props.n_workers, 1)

    def test_cancel_queued_call_never_runs(self):
        pool = self.make_pool(worker_gate)
        directory = self.make_dir()
        started = lambda i: os.path.exists(os.path.join(directory, 'started-%d' % i))

        first = self.call(pool, gate_args(directory, 0, wait=True))
        cancellable = Gio.Cancellable()
        queued = self.call(pool, gate_args(directory, 1), cancellable=cancellable)
        after = self.call(pool, gate_args(directory, 2))
        self.assertEqual(pool.get_n_queued(), 2)
        self.wait_started(directory, 0)

        cancellable.cancel()
        self.spin_until(lambda: queued, 'the queued call to be cancelled')
        self.assertCancelled(queued[0])
        # The only worker is still blocked in the first call.
        self.assertEqual(first, [])
        self.assertEqual(after, [])
        self.assertEqual(pool.get_n_queued(), 1)

        # Cancelled before it was made: it never reaches the queue either.
        early = Gio.Cancellable()
        early.cancel()
        too_late = self.call(pool, gate_args(directory, 3), cancellable=early)
        self.spin_until(lambda: too_late, 'the call cancelled in advance')
        self.assertCancelled(too_late[0])

        self.release(directory)
        self.spin_until(lambda: first and after, 'the other calls')
        self.assertEqual(self.assertValue(first[0])[0], 0)
        self.assertEqual(self.assertValue(after[0])[0], 2)
        self.assertEqual(len(queued), 1, 'a cancelled call completes exactly once')
        self.assertFalse(started(1), 'the cancelled call reached a worker')
        self.assertFalse(started(3), 'the call cancelled in advance reached a worker')

    def test_cancel_running_call_drops_late_result(self):
        pool = self.make_pool(worker_gate)
        exited = self.record_exits(pool)
        directory = self.make_dir()

        cancellable = Gio.Cancellable()
        running = self.call(pool, gate_args(directory, 0, wait=True), cancellable=cancellable)
        self.wait_started(directory, 0)
        [pid] = pool.get_worker_pids()

        cancellable.cancel()
        # Completes while the worker is still blocked in the call.
        self.spin_until(lambda: running, 'the running call to be cancelled')
        self.assertCancelled(running[0])
        os.kill(pid, 0)
        self.assertEqual(pool.get_worker_pids(), [pid])

        nxt = self.call(pool, gate_args(directory, 1))
        self.release(directory)
        self.spin_until(lambda: nxt, 'the next call')
        i, next_pid = self.assertValue(nxt[0])
        # The reply to the cancelled call was dropped, not handed to the
        # next one.
        self.assertEqual(i, 1)
        self.assertEqual(next_pid, pid, 'without kill-on-cancel the worker lives on')
        self.assertEqual(len(running), 1, 'a cancelled call completes exactly once')
        self.assertEqual(exited, [])

    def test_kill_on_cancel(self):
        pool = self.make_pool(worker_gate)
        self.assertFalse(pool.props.kill_on_cancel)
        pool.props.kill_on_cancel = True
        self.assertTrue(pool.get_kill_on_cancel())
        exited = self.record_exits(pool)
        directory = self.make_dir()

        cancellable = Gio.Cancellable()
        running = self.call(pool, gate_args(directory, 0, wait=True), cancellable=cancellable)
        queued = self.call(pool, gate_args(directory, 1))
        self.wait_started(directory, 0)
        [pid] = pool.get_worker_pids()

        cancellable.cancel()
        self.spin_until(lambda: running, 'the running call to be cancelled')
        self.assertCancelled(running[0])
        # Never released: only SIGKILL ends that worker before the deadline.
        self.wait_gone(pid)
        self.spin_until(lambda: exited, 'worker-exited')
        self.assertEqual(exited[0][0], pid)
        self.assertTrue(os.WIFSIGNALED(exited[0][1]))
        self.assertEqual(os.WTERMSIG(exited[0][1]), 9)

        # The queued call was never given to the killed worker.
        self.spin_until(lambda: queued, 'the queued call')
        i, new_pid = self.assertValue(queued[0])
        self.assertEqual(i, 1)
        self.assertNotEqual(new_pid, pid)
        self.assertEqual(len(running), 1, 'a cancelled call completes exactly once')

    def test_worker_signals(self):
        pool = self.make_pool(worker_gate)
        pool.props.min_workers = 2
        spawned = []
        pool.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))
        exited = self.record_exits(pool)
        self.assertTrue(pool.start())
        self.assertEqual(sorted(spawned), sorted(pool.get_worker_pids()))
        self.assertEqual(exited, [])

        victim, survivor = spawned
        os.kill(victim, 9)
        self.spin_until(lambda: exited, 'worker-exited for a worker killed from outside')
        [(pid, status)] = exited
        self.assertEqual(pid, victim)
        self.assertTrue(os.WIFSIGNALED(status))
        self.assertEqual(os.WTERMSIG(status), 9)
        self.assertEqual(pool.props.n_workers, 1)
        self.assertEqual(pool.get_worker_pids(), [survivor])
        self.assertEqual(len(spawned), 2, 'no worker is respawned until a call needs one')

        # A worker that is let go reads the end of its channel and exits 0.
        # Its replacement comes once it is reaped: max-workers (1) bounds
        # the processes alive, those leaving included.
        del exited[:]
        pool.props.min_workers = 1
        pool.restart()
        self.spin_until(lambda: exited, 'worker-exited for a retired worker')
        [(pid, status)] = exited
        self.assertEqual(pid, survivor)
        self.assertTrue(os.WIFEXITED(status))
        self.assertEqual(os.WEXITSTATUS(status), 0)
        self.spin_until(lambda: len(spawned) == 3, 'the replacement of the retired worker')
        self.assertEqual(pool.get_worker_pids(), [spawned[2]])

    def test_call_timeout(self):
        pool = self.make_pool(worker_gate)
        self.assertEqual(pool.props.call_timeout, 0)
        exited = self.record_exits(pool)
        directory = self.make_dir()

        pool.props.call_timeout = 500
        self.assertEqual(pool.get_call_timeout(), 500)
        stuck = self.call(pool, gate_args(directory, 0, wait=True))
        # Forked and written to by call_async itself; on a slow machine the
        # limit may pass before the worker even starts the call.
        [pid] = pool.get_worker_pids()
        self.spin_until(lambda: stuck, 'the call to time out')
        self.assertDcError(stuck[0], Dc.DetachedCodeError.TIMED_OUT)
        self.assertIn(str(pid), stuck[0].error.message)
        self.wait_gone(pid)
        self.spin_until(lambda: exited, 'worker-exited')
        self.assertEqual(exited[0][0], pid)
        self.assertTrue(os.WIFSIGNALED(exited[0][1]))
        self.assertEqual(os.WTERMSIG(exited[0][1]), 9)

        # The limit counts from when a call starts running in its worker:
        # time spent queued behind a call that started before the limit
        # was set does not count.
        pool.props.call_timeout = 0
        blocker = self.call(pool, gate_args(directory, 2, wait=True))
        self.assertEqual(pool.get_n_queued(), 0, 'written before the limit was set')
        # Generous: the queued call must still finish within it once started.
        limit_ms = 4000
        pool.props.call_timeout = limit_ms
        queued = self.call(pool, gate_args(directory, 3))
        self.assertEqual(pool.get_n_queued(), 1)
        self.wait_started(directory, 2)
        waited_until = time.monotonic() + 1.5 * limit_ms / 1000.0
        self.spin_until(lambda: time.monotonic() > waited_until, 'the queued call to age')
        self.assertEqual(queued, [])
        self.release(directory)
        self.spin_until(lambda: blocker and queued, 'the calls after the time-out')
        self.assertEqual(self.assertValue(blocker[0])[0], 2)
        i, new_pid = self.assertValue(queued[0])
        self.assertEqual(i, 3)
        self.assertNotEqual(new_pid, pid)

    def test_restart_sees_parent_changes(self):
        global GENERATION
        self.addCleanup(globals().__setitem__, 'GENERATION', GENERATION)
        pool = self.make_pool(worker_generation)
        self.assertTrue(pool.start())
        generation, pid = self.assertValue(self.call_sync(pool, None))
        self.assertEqual(generation, GENERATION)

        GENERATION += 1
        seen, same_pid = self.assertValue(self.call_sync(pool, None))
        self.assertEqual(seen, GENERATION - 1, 'a worker sees the parent as it was at the fork')
        self.assertEqual(same_pid, pid)

        pool.restart()
        seen, new_pid = self.assertValue(self.call_sync(pool, None))
        self.assertEqual(seen, GENERATION)
        self.assertNotEqual(new_pid, pid)
        self.wait_reaped(pid)

    def test_restart_lets_running_calls_finish(self):
        pool = self.make_pool(worker_gate)
        # Room for the replacement beside the old worker while it finishes.
        pool.props.max_workers = 2
        exited = self.record_exits(pool)
        directory = self.make_dir()
        self.assertTrue(pool.start())
        [old_pid] = pool.get_worker_pids()

        running = self.call(pool, gate_args(directory, 0, wait=True))
        self.wait_started(directory, 0)
        pool.restart()
        # The replacement takes calls while the old worker finishes.
        after = self.call_sync(pool, gate_args(directory, 1))
        i, new_pid = self.assertValue(after)
        self.assertNotEqual(new_pid, old_pid)
        self.assertEqual(running, [])

        self.release(directory)
        self.spin_until(lambda: running, 'the call running during the restart')
        self.assertEqual(self.assertValue(running[0]), (0, old_pid))
        self.spin_until(lambda: exited, 'the old worker to exit')
        self.assertEqual(exited[0][0], old_pid)
        self.assertTrue(os.WIFEXITED(exited[0][1]))
        self.assertEqual(pool.get_worker_pids(), [new_pid])

    def test_n_busy_n_queued_notify(self):
        pool = self.make_pool(worker_gate)
        pool.props.max_workers = 2
        directory = self.make_dir()
        self.assertEqual((pool.props.n_busy, pool.props.n_queued), (0, 0))
        seen = {'n-busy': [], 'n-queued': []}

        def on_notify(obj, pspec):
            seen[pspec.name].append(obj.get_property(pspec.name))

        pool.connect('notify::n-busy', on_notify)
        pool.connect('notify::n-queued', on_notify)

        sink = []
        for i in range(5):
            self.call(pool, gate_args(directory, i, wait=True), sink=sink)
        self.assertEqual(pool.get_n_busy(), 2)
        self.assertEqual(pool.get_n_queued(), 3)
        self.assertEqual(pool.props.n_busy, 2)
        self.assertEqual(pool.props.n_queued, 3)
        self.assertEqual(seen['n-busy'], [1, 2])
        self.assertEqual(seen['n-queued'], [1, 2, 3])

        self.release(directory)
        self.spin_until(lambda: len(sink) == 5, 'all calls')
        for outcome in sink:
            self.assertValue(outcome)
        self.assertEqual((pool.get_n_busy(), pool.get_n_queued()), (0, 0))
        self.assertEqual(seen['n-busy'][-1], 0)
        self.assertEqual(seen['n-queued'][-3:], [2, 1, 0])
        # Explicit notify: a value is announced only when it changes.
        for values in seen.values():
            self.assertTrue(all(a != b for a, b in zip(values, values[1:])), seen)

    def test_max_queued_busy(self):
        pool = self.make_pool(worker_gate)
        self.assertEqual(pool.props.max_queued, 0)
        notified = []
        pool.connect('notify::max-queued', lambda obj, pspec: notified.append(obj.props.max_queued))
        pool.set_max_queued(2)
        pool.props.max_queued = 2
        self.assertEqual((pool.get_max_queued(), notified), (2, [2]))
        directory = self.make_dir()

        # One call runs (held at the gate), two wait, the rest are refused.
        sinks = [self.call(pool, gate_args(directory, i, wait=True)) for i in range(3)]
        self.assertEqual(pool.props.n_queued, 2)
        refused = []
        for i in range(3, 6):
            refused.append(self.call(pool, gate_args(directory, i)))
            self.assertEqual(refused[-1], [], 'not inside call_async()')
        self.assertEqual(pool.props.n_queued, 2)
        self.spin_until(lambda: all(refused), 'the refusals')
        for sink in refused:
            self.assertDcError(sink[0], Dc.DetachedCodeError.BUSY)
            self.assertIn('max-queued', sink[0].error.message)
        self.assertEqual(sinks, [[], [], []], 'the queued calls still wait')
        self.assertEqual(pool.props.n_queued, 2)

        self.release(directory)
        self.spin_until(lambda: all(sinks), 'the accepted calls')
        self.assertEqual([self.assertValue(sink[0])[0] for sink in sinks], [0, 1, 2])
        # The refused calls never ran.
        for i in range(3, 6):
            self.assertFalse(os.path.exists(os.path.join(directory, 'started-%d' % i)))

        # The pool goes on, with room again.
        after = [self.call(pool, gate_args(directory, 10 + i)) for i in range(3)]
        self.spin_until(lambda: all(after), 'calls after the refusals')
        self.assertEqual([self.assertValue(sink[0])[0] for sink in after], [10, 11, 12])

        # Exactly once each.
        spin = []
        GLib.timeout_add(100, lambda: spin.append(1))
        self.spin_until(lambda: spin, 'the loop to settle')
        self.assertEqual([len(sink) for sink in sinks + refused + after], [1] * 9)

    def test_max_queued_lowered_drops_nothing(self):
        pool = self.make_pool(worker_gate)
        pool.props.max_queued = 4
        directory = self.make_dir()
        sinks = [self.call(pool, gate_args(directory, i, wait=True)) for i in range(5)]
        self.assertEqual(pool.props.n_queued, 4)
        pool.props.max_queued = 1
        refused = self.call(pool, gate_args(directory, 9))
        self.spin_until(lambda: refused, 'the refusal')
        self.assertDcError(refused[0], Dc.DetachedCodeError.BUSY)
        self.assertEqual(pool.props.n_queued, 4)
        self.release(directory)
        self.spin_until(lambda: all(sinks), 'the queued calls')
        self.assertEqual([self.assertValue(sink[0])[0] for sink in sinks], list(range(5)))

    def test_max_queued_from_another_thread(self):
        pool = self.make_pool(worker_gate)
        pool.props.max_queued = 3
        # Forked now, while this process has a single thread.
        self.assertTrue(pool.start())
        directory = self.make_dir()
        running = self.call(pool, gate_args(directory, 0, wait=True))
        results = []
        report = {}
        n_calls = 10

        def thread_main():
            context = GLib.MainContext.new()
            context.push_thread_default()
            try:
                def done(source, result):
                    if threading.get_ident() != thread.ident:
                        report['wrong-thread'] = True
                    try:
                        results.append(Outcome(value=source.call_finish(result)))
                    except GLib.Error as e:
                        results.append(Outcome(error=e))

                for i in range(1, n_calls + 1):
                    pool.call_async(gate_args(directory, i), GLib.PRIORITY_DEFAULT, None, done)
                wakeup = GLib.timeout_source_new(20)
                wakeup.set_callback(lambda *_: GLib.SOURCE_CONTINUE)
                wakeup.attach(context)
                deadline = time.monotonic() + TIMEOUT_S
                while len(results) < n_calls and time.monotonic() < deadline:
                    context.iteration(True)
                wakeup.destroy()
            finally:
                context.pop_thread_default()

        thread = threading.Thread(target=thread_main)
        thread.start()
        # This thread runs the pool's context; the worker is held meanwhile.
        self.spin_until(lambda: len(results) == n_calls - 3, 'the refusals')
        self.assertEqual(pool.props.n_queued, 3)
        self.release(directory)
        self.spin_until(lambda: not thread.is_alive(), 'the calling thread')
        thread.join()
        self.spin_until(lambda: running, 'the gated call')
        self.assertNotIn('wrong-thread', report)
        self.assertEqual(len(results), n_calls)
        busy = [o for o in results if o.error is not None]
        self.assertEqual(len(busy), n_calls - 3)
        for outcome in busy:
            self.assertDcError(outcome, Dc.DetachedCodeError.BUSY)
        self.assertEqual(len([self.assertValue(o) for o in results if o.error is None]), 3)

    def test_max_worker_calls(self):
        pool = self.make_pool(worker_echo_pid)
        pool.props.max_worker_calls = 3
        self.assertEqual(pool.get_max_worker_calls(), 3)
        spawned = []
        pool.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))
        exited = self.record_exits(pool)

        n_calls = 20
        sink = []
        for i in range(n_calls):
            self.call(pool, GLib.Variant('(ii)', (i, 0)), sink=sink)
        self.spin_until(lambda: len(sink) == n_calls, 'all %d calls' % n_calls)

        served = {}
        for outcome in sink:
            i, pid = self.assertValue(outcome)
            served.setdefault(pid, []).append(i)
        self.assertEqual(sorted(i for calls in served.values() for i in calls),
                         list(range(n_calls)))
        self.assertGreaterEqual(len(served), 7, served)
        self.assertTrue(all(len(calls) <= 3 for calls in served.values()), served)
        self.assertTrue(set(served) <= set(spawned))

        # Every worker that served its three calls left on its own, with
        # status 0.
        full = [pid for pid, calls in served.items() if len(calls) == 3]
        self.spin_until(lambda: set(full) <= {pid for pid, _ in exited},
                        'the recycled workers to exit')
        for pid, status in exited:
            self.assertTrue(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
                            'worker %d: wait status %d' % (pid, status))

    def test_pipeline_depth(self):
        pool = self.make_pool(worker_echo_pid)
        self.assertEqual(pool.props.pipeline_depth, 1)
        pool.props.pipeline_depth = 8
        self.assertEqual(pool.get_pipeline_depth(), 8)

        n_calls = 50
        sink = []
        for i in range(n_calls):
            # Early calls are the slowest: results overtaking them would show.
            self.call(pool, GLib.Variant('(ii)', (i, 5 if i < 3 else 0)), sink=sink)
        # Eight were written to the only worker at once; the rest wait.
        self.assertEqual(pool.get_n_busy(), 1)
        self.assertEqual(pool.get_n_queued(), n_calls - 8)
        self.spin_until(lambda: len(sink) == n_calls, 'all %d calls' % n_calls)
        values = [self.assertValue(o) for o in sink]
        self.assertEqual([i for i, _ in values], list(range(n_calls)))
        self.assertEqual(len({pid for _, pid in values}), 1)

    def test_pipeline_prefers_idle_workers(self):
        pool = self.make_pool(worker_echo_pid)
        pool.props.min_workers = 2
        pool.props.pipeline_depth = 4
        self.assertTrue(pool.start())
        sink = []
        self.call(pool, GLib.Variant('(ii)', (0, 0)), sink=sink)
        self.call(pool, GLib.Variant('(ii)', (1, 0)), sink=sink)
        self.assertEqual(pool.get_n_busy(), 2)
        self.spin_until(lambda: len(sink) == 2, 'both calls')
        self.assertNotEqual(self.assertValue(sink[0])[1], self.assertValue(sink[1])[1])

    def test_pipelined_calls_behind_a_killed_worker(self):
        pool = self.make_pool(worker_gate)
        pool.props.pipeline_depth = 4
        pool.props.kill_on_cancel = True
        directory = self.make_dir()

        cancellable = Gio.Cancellable()
        sink = []
        running = self.call(pool, gate_args(directory, 0, wait=True), cancellable=cancellable)
        for i in (1, 2):
            self.call(pool, gate_args(directory, i), sink=sink)
        self.assertEqual(pool.get_n_queued(), 0, 'all three were written to the worker')
        self.wait_started(directory, 0)
        [pid] = pool.get_worker_pids()

        cancellable.cancel()
        self.spin_until(lambda: running and len(sink) == 2, 'all three calls')
        self.assertCancelled(running[0])
        # Whether the worker had read them is unknown: they fail rather
        # than risk running twice.
        for outcome in sink:
            self.assertDcError(outcome, Dc.DetachedCodeError.WORKER_DIED)
            self.assertIn(str(pid), outcome.error.message)
        self.assertFalse(os.path.exists(os.path.join(directory, 'started-1')))
        self.wait_gone(pid)

    def test_idle_timeout(self):
        pool = self.make_pool(worker_gate)
        pool.props.max_workers = 3
        pool.props.idle_timeout = 200
        self.assertEqual(pool.get_idle_timeout(), 200)
        exited = self.record_exits(pool)
        directory = self.make_dir()
        self.assertTrue(pool.start())

        sink = []
        for i in range(3):
            self.call(pool, gate_args(directory, i, wait=True), sink=sink)
        self.assertEqual(pool.props.n_workers, 3)
        self.release(directory)
        self.spin_until(lambda: len(sink) == 3, 'all calls')
        # The two above min-workers leave once idle; one is kept.
        self.spin_until(lambda: len(exited) == 2, 'the idle workers to exit')
        self.assertEqual(pool.props.n_workers, 1)
        for pid, status in exited:
            self.assertTrue(os.WIFEXITED(status), status)
        self.assertEqual(len(pool.get_worker_pids()), 1)

    def test_call_from_another_thread(self):
        pool = self.make_pool(worker_echo_pid)
        # Forked now, while this process has a single thread: a worker
        # forked while another thread holds the GIL would wait for it forever.
        self.assertTrue(pool.start())
        [pid] = pool.get_worker_pids()
        report = {}

        def thread_main():
            context = GLib.MainContext.new()
            context.push_thread_default()
            try:
                sink = []

                def done(source, result):
                    report['thread'] = threading.get_ident()
                    try:
                        sink.append(Outcome(value=source.call_finish(result)))
                    except GLib.Error as e:
                        sink.append(Outcome(error=e))

                pool.call_async(GLib.Variant('(ii)', (7, 0)), GLib.PRIORITY_DEFAULT, None, done)
                wakeup = GLib.timeout_source_new(20)
                wakeup.set_callback(lambda *_: GLib.SOURCE_CONTINUE)
                wakeup.attach(context)
                deadline = time.monotonic() + TIMEOUT_S
                while not sink and time.monotonic() < deadline:
                    context.iteration(True)
                wakeup.destroy()
                report['sink'] = sink
            finally:
                context.pop_thread_default()

        thread = threading.Thread(target=thread_main)
        thread.start()
        # This thread runs the pool's own context, the default one.
        self.spin_until(lambda: not thread.is_alive(), 'the calling thread')
        thread.join()
        self.assertEqual(report.get('thread'), thread.ident,
                         'the callback ran in the calling thread')
        [outcome] = report['sink']
        self.assertEqual(self.assertValue(outcome), (7, pid))


    def test_worker_exited_after_shutdown(self):
        pool = self.make_pool(worker_echo_pid)
        exited = self.record_exits(pool)
        self.assertTrue(pool.start())
        [pid] = pool.get_worker_pids()
        pool.shutdown()
        self.wait_gone(pid)
        # Every worker-spawned should be matched by a worker-exited while
        # the pool object lives.
        self.assertEqual([p for p, _ in exited], [pid])

    def test_descriptor_round_trip(self):
        # Once through the socket, once with both messages big enough to
        # travel as memfds: a memfd goes first among a frame's descriptors,
        # and the handles must still find the caller's.  No subTest(): the
        # TAP runner prints one line per test.
        for threshold, padding in ((0, b''), (64 * 1024, os.urandom(128 * 1024))):
            where = 'memfd-threshold %d' % threshold
            pool = self.make_fd_pool(worker_pipes)
            pool.props.memfd_threshold = threshold
            fd_list = fd_list_of(pipe_holding(b'first'), pipe_holding(b'second'))
            # `h` values index the list, as in GDBus: the order in the
            # arguments is the code's to choose.
            outcome = self.call_fds_sync(pool, pipes_args('read', (1, 0), padding), fd_list)

            self.assertIsNone(outcome.error, '%s: %r' % (where, outcome))
            value = outcome.value
            self.assertEqual(value.get_type_string(), '(asayii)', where)
            self.assertEqual(value.get_child_value(0).unpack(), ['second', 'first'], where)
            self.assertEqual(variant_bytes(value.get_child_value(1)), padding, where)
            self.assertNotEqual(value.get_child_value(3).get_int32(), os.getpid(), where)

            self.assertIsNotNone(outcome.fd_list, where)
            self.assertEqual(outcome.fd_list.get_length(), 1, where)
            self.assertEqual(read_all(outcome.fd_list.get(0)), b'from the worker', where)

            # The caller's list went out untouched, its descriptors still
            # open on the very pipes the worker drained.
            self.assertEqual(fd_list.get_length(), 2, where)
            self.assertEqual(read_all(fd_list.get(0)), b'', where)

    def test_calls_without_descriptors(self):
        # A pool made with new_with_fds() takes plain calls, and a plain
        # pool takes call_with_unix_fd_list_async() without descriptors.
        pool = self.make_fd_pool(worker_fd_shapes)
        self.assertEqual(self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('no-list',)))),
                         ('no-list', True))
        outcome = self.call_fds_sync(pool, GLib.Variant('(s)', ('no-list',)), None)
        self.assertEqual(self.assertValue(outcome), ('no-list', True))
        self.assertIsNone(outcome.fd_list)
        # An empty list is no list.
        outcome = self.call_fds_sync(pool, GLib.Variant('(s)', ('no-list',)), Gio.UnixFDList())
        self.assertEqual(self.assertValue(outcome), ('no-list', True))

        plain = self.make_pool(worker_identity)
        outcome = self.call_fds_sync(plain, GLib.Variant('(s)', ('plain',)), None)
        self.assertEqual(self.assertValue(outcome), ('plain',))
        self.assertIsNone(outcome.fd_list)

    def test_descriptors_refused_with_marshal(self):
        spawned = []
        # On the pipe stream, SCM_RIGHTS has no socket to ride on.
        piped = self.make_fd_pool(worker_fd_shapes)
        piped.props.stream = Dc.Stream.PIPE
        piped.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))
        outcome = self.call_fds_sync(piped, GLib.Variant('(sh)', ('no-list', 0)),
                                     fd_list_of(pipe_holding(b'x')))
        self.assertDcError(outcome, Dc.DetachedCodeError.MARSHAL)

        # A pool made with new(): its code has nowhere to receive them.
        plain = self.make_pool(worker_identity)
        plain.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))
        outcome = self.call_fds_sync(plain, GLib.Variant('(h)', (0,)), fd_list_of(pipe_holding(b'x')))
        self.assertDcError(outcome, Dc.DetachedCodeError.MARSHAL)

        # More than one message can carry.
        many = Gio.UnixFDList()
        for _ in range(300):
            many.append(0)
        socket = self.make_fd_pool(worker_pipes)
        socket.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))
        outcome = self.call_fds_sync(socket, pipes_args('read'), many)
        self.assertDcError(outcome, Dc.DetachedCodeError.MARSHAL)

        self.assertEqual(spawned, [], 'a refused call reached a worker')
        # The pipe-stream pool still serves calls that carry none.
        outcome = self.call_fds_sync(piped, GLib.Variant('(s)', ('no-list',)), None)
        self.assertEqual(self.assertValue(outcome), ('no-list', True))

    def test_no_descriptor_leak(self):
        pool = self.make_fd_pool(worker_pipes)
        pool.props.memfd_threshold = 64 * 1024
        piped = self.make_fd_pool(worker_pipes)
        piped.props.stream = Dc.Stream.PIPE
        padding = os.urandom(128 * 1024)

        def one_round():
            # Result (through memfds, then through the socket), an error
            # from the code, a worker that exits, a refusal: each path frees
            # what it was given and what came back.
            entry_counts = []
            for pad in (padding, b''):
                fd_list = fd_list_of(pipe_holding(b'a'), pipe_holding(b'b'))
                outcome = self.call_fds_sync(pool, pipes_args('read', (0, 1), pad), fd_list)
                self.assertIsNone(outcome.error, outcome)
                self.assertEqual(read_all(outcome.fd_list.get(0)), b'from the worker')
                entry_counts.append(outcome.value.get_child_value(2).get_int32())
            # Both calls ran in the same worker with the same descriptors in
            # hand: one left open by the first would show in the second.
            self.assertEqual(entry_counts[0], entry_counts[1], 'the worker leaked descriptors')

            outcome = self.call_fds_sync(pool, pipes_args('gerror', (0,)),
                                         fd_list_of(pipe_holding(b'c')))
            self.assertTrue(outcome.error.matches(Gio.io_error_quark(), Gio.IOErrorEnum.NOT_FOUND),
                            outcome)

            [pid] = pool.get_worker_pids()
            outcome = self.call_fds_sync(pool, pipes_args('exit3', (0,), padding),
                                         fd_list_of(pipe_holding(b'd')))
            self.assertDcError(outcome, Dc.DetachedCodeError.WORKER_DIED)
            self.wait_reaped(pid)

            outcome = self.call_fds_sync(piped, pipes_args('read', (0,)),
                                         fd_list_of(pipe_holding(b'e')))
            self.assertDcError(outcome, Dc.DetachedCodeError.MARSHAL)

        def settled_count():
            # Outcomes and lists are gone with the round's frames; what
            # PyGObject still holds goes with a collection.
            gc.collect()
            context = GLib.MainContext.default()
            while context.pending():
                context.iteration(False)
            return open_fd_count()

        # The warm-up opens what the process keeps for good (the child-watch
        # machinery, say); only a second round can tell a leak from that.
        one_round()
        before = settled_count()
        one_round()
        after = settled_count()
        self.assertEqual(after, before, 'descriptors open after a round: %d, then %d'
                         % (before, after))

    def test_fd_func_returns_a_pair(self):
        # PyGObject maps a callback's (out) parameter to the second member
        # of a returned tuple.  A bare variant is not a tuple; PyGObject
        # then gives up on the out parameter without raising, so the
        # function returns NULL with no error and nothing is printed.
        pool = self.make_fd_pool(worker_fd_shapes)
        outcome = self.call_fds_sync(pool, GLib.Variant('(s)', ('bare',)), None)
        self.assertDcError(outcome, Dc.DetachedCodeError.FAILED)
        self.assertEqual(self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))[0],
                         'ok')

    def test_descriptors_returned_on_pipe_stream(self):
        pool = self.make_fd_pool(worker_fd_shapes)
        pool.props.stream = Dc.Stream.PIPE
        exited = self.record_exits(pool)
        outcome = self.call_fds_sync(pool, GLib.Variant('(s)', ('pipe-back',)), None)
        self.assertDcError(outcome, Dc.DetachedCodeError.MARSHAL)
        self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))
        self.assertEqual(exited, [], 'the worker left')

    def test_too_many_descriptors_returned(self):
        pool = self.make_fd_pool(worker_fd_shapes)
        exited = self.record_exits(pool)
        outcome = self.call_fds_sync(pool, GLib.Variant('(s)', ('too-many',)), None)
        self.assertDcError(outcome, Dc.DetachedCodeError.MARSHAL)
        self.assertValue(self.call_sync(pool, GLib.Variant('(s)', ('ok',))))
        self.assertEqual(exited, [], 'the worker left')

    def test_memfd_threshold_one_mib(self):
        data = os.urandom(1 << 20)
        args = GLib.Variant.new_tuple(bytes_variant(data))
        self.assertEqual(self.make_pool(worker_memfd_echo).props.memfd_threshold, 0,
                         'off by default')
        # Mappings of this process that are not the pool's do not count.
        unrelated = len(read_only_memfd_mappings())

        for threshold in (0, 64 * 1024):
            where = 'memfd-threshold %d' % threshold
            pool = self.make_pool(worker_memfd_echo)
            pool.set_memfd_threshold(threshold)
            self.assertEqual(pool.get_memfd_threshold(), threshold)
            outcome = self.call_sync(pool, args)
            self.assertIsNone(outcome.error, '%s: %r' % (where, outcome))
            value = outcome.value
            del outcome
            self.assertEqual(variant_bytes(value.get_child_value(0)), data, where)
            # Each receiver maps the other's memfd read-only, and holds the
            # mapping as long as the value it backs.
            self.assertEqual(value.get_child_value(1).get_boolean(), threshold > 0,
                             '%s: a memfd mapping in the worker' % where)
            self.assertEqual(len(read_only_memfd_mappings()) > unrelated, threshold > 0,
                             '%s: a memfd mapping in the parent' % where)
            del value
            gc.collect()
            self.assertEqual(len(read_only_memfd_mappings()), unrelated,
                             '%s: a mapping outlived its value' % where)


class TAPResult(unittest.TestResult):
    """Prints one TAP line per test case as it ends."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self.number = 0

    def _line(self, text, diagnostics=None):
        self.number += 1
        self.stream.write(text % self.number + '\n')
        if diagnostics:
            for line in diagnostics.rstrip('\n').split('\n'):
                self.stream.write('# ' + line + '\n')
        self.stream.flush()

    def addSuccess(self, test):
        super().addSuccess(test)
        self._line('ok %d - ' + test.id())

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line('not ok %d - ' + test.id(), self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._line('not ok %d - ' + test.id(), self.errors[-1][1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line('ok %d - ' + test.id() + ' # SKIP ' + reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._line('ok %d - ' + test.id() + ' # TODO expected failure')

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._line('not ok %d - ' + test.id() + ' # unexpected success')


def main():
    loader = unittest.TestLoader()
    if len(sys.argv) > 1:
        suite = loader.loadTestsFromNames(sys.argv[1:], sys.modules[__name__])
    else:
        suite = loader.loadTestsFromModule(sys.modules[__name__])
    return run_tap(suite)


def run_tap(suite):
    """Runs @suite, printing TAP; the exit status."""
    # Workers are forks of this process: anything buffered here would be
    # duplicated if a worker ever flushed it.
    sys.stdout.flush()
    sys.stdout.write('1..%d\n' % suite.countTestCases())
    sys.stdout.flush()
    result = TAPResult(sys.stdout)
    try:
        suite.run(result)
    except Exception:
        traceback.print_exc()
        return 1
    return 0 if result.wasSuccessful() else 1


if __name__ == '__main__':
    sys.exit(main())
