#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The fork-server property through PyGObject: the worker template is a
# child of this process that nobody may see as a worker, workers are its
# clones made with CLONE_PARENT (so children of this process), and they see
# this process's memory as it was when the template was made.
#
# Run in a process of its own: the tests count this process's children, so
# no pool of another file may leave one behind.

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import gi

import tree_overrides  # noqa: E402  (before Dc: the overrides of this tree)

gi.require_version('GLib', '2.0')
gi.require_version('Gio', '2.0')
gi.require_version('Dc', '1.0')
from gi.repository import Dc, GLib  # noqa: E402

# The helpers and the TAP runner of the main Python test; importing it runs
# none of its tests (they are not in this module).
from test_dc import DcTestCase, run_tap  # noqa: E402

# Generous: a loaded machine may take seconds to schedule a fork.
DEADLINE_S = 30


def proc_stat(pid):
    """(state, ppid) of a process, or None once it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(')') + 2:].split()
    return fields[0], int(fields[1])


def children():
    """{pid: state} of every process whose parent is this one, zombies too."""
    me = os.getpid()
    found = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st is not None and st[1] == me:
            found[int(name)] = st[0]
    return found


def thread_names():
    names = []
    for tid in os.listdir('/proc/self/task'):
        try:
            with open('/proc/self/task/%s/comm' % tid) as f:
                names.append(f.read().strip())
        except FileNotFoundError:
            pass
    return names


def thread_count(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('Threads:'):
                return int(line.split()[1])
    raise AssertionError('no Threads: line for %d' % pid)


THREAD_WARNING = 'Forking a worker from a process with'


@contextlib.contextmanager
def direct_forks(test):
    """Lets workers fork from this process without the template.

    By then this process has a second thread, GLib's "gmain", which the
    library's first GTask started (see test_direct_fork_warns_once);
    each such pool warns once that it forks from a threaded process, fatal
    here under G_DEBUG=fatal-warnings.  Only that warning is let through:
    it is kept off the log, and anything else written to stderr meanwhile
    fails the test."""
    old = GLib.log_set_always_fatal(GLib.LogLevelFlags.LEVEL_CRITICAL)
    GLib.log_set_always_fatal(GLib.LogLevelFlags(int(old) & ~int(GLib.LogLevelFlags.LEVEL_WARNING)))
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            GLib.log_set_always_fatal(old)
        captured.seek(0)
        text = captured.read().decode(errors='replace')
    unexpected = [line for line in text.splitlines()
                  if line.strip() and THREAD_WARNING not in line]
    test.assertEqual(unexpected, [], 'stderr while forking without the template')


def run_script(lines):
    """Runs @lines in a fresh interpreter with warnings not fatal; the
    CompletedProcess, checked for a clean exit."""
    env = dict(os.environ)
    env.pop('G_DEBUG', None)
    return subprocess.run([sys.executable, '-c', '\n'.join(lines)], env=env,
                          capture_output=True, text=True, timeout=DEADLINE_S)


# Read by the worker functions in the worker's copy of this module; the
# tests change it in the parent.
SNAPSHOT = 'initial'


def worker_report(args):
    # Python, run in a clone of the template: its pid and parent, a value it
    # computes, and what it sees of this module.
    return GLib.Variant('(iiis)', (os.getpid(), os.getppid(), sum(range(1000)), SNAPSHOT))


def set_snapshot(value):
    global SNAPSHOT
    SNAPSHOT = value


class TestForkServer(DcTestCase):

    def setUp(self):
        self.addCleanup(set_snapshot, SNAPSHOT)
        # Pools of earlier tests leave through the main loop: wait until
        # their processes (templates too) are reaped, so that every child
        # counted below belongs to this test.
        self.wait_children(set(), 'the children of earlier tests to be reaped')

    def wait_children(self, expected, what):
        self.spin_until(lambda: set(children()) == set(expected),
                        '%s (children now: %r, expected %r)'
                        % (what, children(), sorted(expected)), timeout=DEADLINE_S)

    def make_counted_pool(self):
        pool = self.make_pool(worker_report)
        spawned = []
        exited = []
        counts = []
        pool.connect('worker-spawned', lambda _pool, pid: spawned.append(pid))
        pool.connect('worker-exited', lambda _pool, pid, status: exited.append((pid, status)))
        pool.connect('notify::n-workers', lambda p, _pspec: counts.append(p.props.n_workers))
        return pool, spawned, exited, counts

    def template_of(self, pool):
        """The one child of this process that is not a worker."""
        workers = set(pool.get_worker_pids())
        others = [pid for pid in children() if pid not in workers]
        self.assertEqual(len(others), 1, 'children %r, workers %r' % (children(), workers))
        return others[0]

    def call_report(self, pool):
        pid, ppid, total, snapshot = self.assertValue(self.call_sync(pool, None))
        self.assertEqual(ppid, os.getpid(), 'the worker is a child of this process')
        self.assertEqual(total, 499500)
        return pid, snapshot

    def test_default_and_settable(self):
        pool = self.make_pool(worker_report)
        self.assertTrue(pool.props.fork_server)
        self.assertTrue(pool.get_fork_server())
        notified = []
        pool.connect('notify::fork-server', lambda p, _pspec: notified.append(p.props.fork_server))

        pool.props.fork_server = False
        self.assertFalse(pool.props.fork_server)
        self.assertFalse(pool.get_fork_server())
        pool.props.fork_server = False   # unchanged: explicit notify stays quiet
        pool.set_fork_server(True)
        self.assertTrue(pool.get_fork_server())
        pool.set_fork_server(False)
        self.assertEqual(notified, [False, True, False])

        # Also through the generic GObject API and at construction.
        self.assertFalse(pool.get_property('fork-server'))
        pool.set_property('fork-server', True)
        self.assertTrue(pool.props.fork_server)
        other = Dc.DetachedCode(fork_server=False)
        self.addCleanup(other.shutdown)
        self.assertFalse(other.props.fork_server)

    def test_template_is_invisible(self):
        pool, spawned, exited, counts = self.make_counted_pool()
        pool.props.min_workers = 2
        pool.props.max_workers = 4
        self.assertEqual(children(), {})
        self.assertTrue(pool.start())

        pids = pool.get_worker_pids()
        self.assertEqual(len(pids), 2, pids)
        self.assertEqual(pool.props.n_workers, 2)
        self.assertEqual(pool.get_n_workers(), 2)
        self.assertEqual(sorted(spawned), sorted(pids), 'worker-spawned once per worker')
        self.assertEqual(len(spawned), 2)
        self.assertEqual(exited, [])
        self.assertTrue(all(n <= 2 for n in counts), counts)

        kids = children()
        self.assertEqual(len(kids), 3, 'two workers and the template: %r' % (kids,))
        for pid in pids:
            self.assertIn(pid, kids)
            self.assertEqual(proc_stat(pid)[1], os.getpid(), 'worker %d: not our child' % pid)
        template = self.template_of(pool)
        self.assertNotIn(template, pids)
        self.assertNotIn(template, spawned)
        self.assertNotEqual(kids[template], 'Z', 'the template is alive')
        self.assertEqual(thread_count(template), 1, 'the template is single-threaded')

        # Calls run in the workers, never in the template, and add no worker.
        for _ in range(4):
            pid, _snapshot = self.call_report(pool)
            self.assertIn(pid, pids)
        self.assertEqual(sorted(pool.get_worker_pids()), sorted(pids))
        self.assertEqual(len(spawned), 2)
        self.assertEqual(set(children()), set(pids) | {template})

        # Shutdown ends the workers and the template, and reports only the
        # workers.
        pool.shutdown()
        self.wait_children(set(), 'the workers and the template to be reaped')
        self.spin_until(lambda: len(exited) == 2, 'worker-exited for both workers')
        self.assertEqual(sorted(pid for pid, _ in exited), sorted(pids))
        self.assertEqual(len(spawned), 2)
        self.assertTrue(all(n <= 2 for n in counts), counts)

    def test_first_call_makes_the_template(self):
        pool, spawned, exited, _counts = self.make_counted_pool()
        self.assertEqual(children(), {}, 'nothing before the first call')
        pid, _ = self.call_report(pool)
        self.assertEqual(pool.get_worker_pids(), [pid])
        self.assertEqual(spawned, [pid])
        self.assertEqual(len(children()), 2, 'the worker and the template: %r' % (children(),))
        self.assertNotEqual(self.template_of(pool), pid)

    def test_signals_across_restart(self):
        pool, spawned, exited, counts = self.make_counted_pool()
        pool.props.min_workers = 2
        pool.props.max_workers = 4
        self.assertTrue(pool.start())
        old = sorted(pool.get_worker_pids())
        old_template = self.template_of(pool)

        del spawned[:]
        pool.restart()
        # The old workers (idle) leave, the old template with them; new ones
        # come from a new template.
        self.spin_until(lambda: len(exited) >= 2 and pool.props.n_workers == 2,
                        'the old workers to leave and two new ones to run')
        self.spin_until(lambda: proc_stat(old_template) is None
                        or proc_stat(old_template)[1] != os.getpid(),
                        'the old template to be reaped', timeout=DEADLINE_S)
        new = sorted(pool.get_worker_pids())
        self.assertEqual(len(new), 2)
        self.assertFalse(set(new) & set(old), (old, new))
        self.assertEqual(sorted(pid for pid, _ in exited), old,
                         'worker-exited only for the old workers')
        for _pid, status in exited:
            self.assertTrue(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status)
        self.assertEqual(sorted(spawned), new, 'worker-spawned only for the new workers')
        self.wait_children(set(new) | {self.template_of(pool)}, 'the new workers and template')
        new_template = self.template_of(pool)
        self.assertNotEqual(new_template, old_template, 'restart() made a new template')
        self.assertNotIn(old_template, [pid for pid, _ in exited])
        self.assertNotIn(new_template, spawned)
        self.assertTrue(all(n <= 2 for n in counts), counts)
        for pid in new:
            self.assertEqual(proc_stat(pid)[1], os.getpid())

        pool.shutdown()
        self.wait_children(set(), 'everything to be reaped')
        self.spin_until(lambda: len(exited) == 4, 'worker-exited for the new workers')
        self.assertEqual(sorted(pid for pid, _ in exited[2:]), new)
        self.assertEqual(len(spawned), 2)

    def test_without_fork_server_no_extra_child(self):
        pool, spawned, exited, _counts = self.make_counted_pool()
        pool.props.fork_server = False
        pool.props.min_workers = 2
        pool.props.max_workers = 4
        with direct_forks(self):
            self.assertTrue(pool.start())
        pids = sorted(pool.get_worker_pids())
        self.assertEqual(len(pids), 2)
        self.assertEqual(sorted(spawned), pids)
        self.assertEqual(sorted(children()), pids, 'no template without fork-server')
        pid, _ = self.call_report(pool)
        self.assertIn(pid, pids)
        self.assertEqual(sorted(children()), pids)

        # Settable again once no worker runs; the next start() makes one.
        pool.shutdown()
        self.wait_children(set(), 'the workers to be reaped')
        self.spin_until(lambda: len(exited) == 2, 'worker-exited for both workers')
        pool.props.fork_server = True
        self.assertTrue(pool.props.fork_server)
        self.assertTrue(pool.start())
        pids = pool.get_worker_pids()
        self.assertEqual(len(pids), 2)
        self.assertEqual(len(children()), 3, children())
        self.template_of(pool)

    def test_refused_while_workers_run(self):
        # The refusal is a g_critical, fatal here (G_DEBUG=fatal-warnings):
        # it is watched in a process of its own, with warnings not fatal.
        script = [
            'import gi',
            "gi.require_version('Dc', '1.0')",
            'from gi.repository import Dc, GLib',
            "pool = Dc.DetachedCode.new(lambda args: GLib.Variant('(i)', (1,)))",
            'assert pool.start()',
            'pool.props.fork_server = False',
            "print('after', pool.props.fork_server, len(pool.get_worker_pids()), flush=True)",
            'pool.shutdown()',
        ]
        done = run_script(script)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), 'after True 1', done.stderr)
        self.assertIn('CRITICAL', done.stderr)
        self.assertIn('only while no worker runs', done.stderr)

    def test_direct_fork_warns_once(self):
        # A program that made no thread of its own, fork-server FALSE, two
        # workers forked one after the other.  The library's first GTask
        # starts GLib's "gmain" thread, so the process is threaded by the
        # first fork and a lock that thread holds could stay locked in a
        # worker: the pool warns, naming two threads and the property,
        # once however many workers it forks, and the calls still work.
        # Watched in a fresh interpreter, with warnings not fatal.
        script = [
            'import os',
            'import gi',
            "gi.require_version('Dc', '1.0')",
            'from gi.repository import Dc, GLib',
            "pool = Dc.DetachedCode.new(lambda args: GLib.Variant('(i)', (os.getpid(),)))",
            'pool.props.fork_server = False',
            'pool.props.max_worker_calls = 1',
            "print('threads before', len(os.listdir('/proc/self/task')), flush=True)",
            'sink = []',
            'for _ in range(2):',
            '    pool.call_async(None, 0, None, lambda p, r: sink.append(p.call_finish(r)))',
            'while len(sink) < 2:',
            '    GLib.MainContext.default().iteration(True)',
            'pids = {v.unpack()[0] for v in sink}',
            "print('result', len(pids), os.getpid() not in pids, flush=True)",
            'pool.shutdown()',
        ]
        done = run_script(script)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.splitlines(), ['threads before 1', 'result 2 True'],
                         done.stderr)
        warnings = [line for line in done.stderr.splitlines() if THREAD_WARNING in line]
        self.assertEqual(len(warnings), 1, done.stderr)
        self.assertIn(THREAD_WARNING + ' 2 threads', warnings[0])
        self.assertIn('fork-server', warnings[0])

    def test_python_code_in_workers(self):
        set_snapshot('set before start')
        pool, spawned, exited, _counts = self.make_counted_pool()
        # A fresh worker, cloned by the template, for every call.
        pool.props.max_worker_calls = 1
        self.assertTrue(pool.start())
        template = self.template_of(pool)
        seen = []
        for _ in range(3):
            pid, snapshot = self.call_report(pool)
            self.assertNotEqual(pid, os.getpid())
            self.assertNotEqual(pid, template, 'a call ran in the template')
            self.assertEqual(snapshot, 'set before start')
            seen.append(pid)
        self.assertEqual(len(set(seen)), 3, 'one fresh worker per call: %r' % (seen,))
        self.assertTrue(set(seen) <= set(spawned))
        self.assertNotIn(template, spawned)
        # Each left after its call; only the template stays.
        self.spin_until(lambda: len(exited) == 3, 'the three workers to leave')
        self.assertEqual(sorted(pid for pid, _ in exited), sorted(seen))
        self.wait_children({template}, 'the workers to be reaped, the template to stay')

    def test_python_code_after_a_background_thread(self):
        # The thread exists before start() but waits, holding nothing, while
        # the template is made; then it keeps the interpreter busy (and so
        # the GIL, most of the time) while the template clones fresh workers,
        # which must run Python all the same.
        go = threading.Event()
        stop = threading.Event()
        rounds = []

        def busy():
            go.wait(DEADLINE_S)
            n = 0
            while not stop.is_set():
                n += sum(range(1000)) and 1
                GLib.quark_from_string('dc-test-quark-%d' % (n % 64))
            rounds.append(n)

        n_threads = thread_count(os.getpid())
        thread = threading.Thread(target=busy)
        thread.start()

        def stop_thread():
            stop.set()
            go.set()
            thread.join()

        self.addCleanup(stop_thread)
        self.assertEqual(thread_count(os.getpid()), n_threads + 1)

        set_snapshot('set before start, with a thread')
        pool, spawned, _exited, _counts = self.make_counted_pool()
        pool.props.max_worker_calls = 1
        self.assertTrue(pool.start())
        template = self.template_of(pool)
        self.assertEqual(thread_count(template), 1, 'the template is single-threaded')

        go.set()
        seen = []
        for _ in range(4):
            pid, snapshot = self.call_report(pool)
            self.assertEqual(snapshot, 'set before start, with a thread')
            self.assertEqual(proc_stat(template)[1], os.getpid())
            seen.append(pid)
        self.assertEqual(len(set(seen)), 4, seen)
        self.assertNotIn(template, spawned)
        stop_thread()
        self.assertTrue(rounds and rounds[0] > 0, 'the thread ran')

    def test_memory_snapshot(self):
        set_snapshot('old')
        pool = self.make_pool(worker_report)
        pool.props.max_worker_calls = 1
        self.assertTrue(pool.start())
        set_snapshot('new')

        # The worker made at start(), then one cloned now by the template:
        # both see this process as it was when the template was made.
        pid1, seen1 = self.call_report(pool)
        pid2, seen2 = self.call_report(pool)
        self.assertNotEqual(pid1, pid2, 'max-worker-calls 1: a fresh worker')
        self.assertEqual((seen1, seen2), ('old', 'old'))

        # restart() makes a new template from this process as it is now.
        pool.restart()
        pid3, seen3 = self.call_report(pool)
        self.assertEqual(seen3, 'new')
        set_snapshot('newer')
        pid4, seen4 = self.call_report(pool)
        self.assertEqual(seen4, 'new', 'a fresh worker of the same template')
        self.assertEqual(len({pid1, pid2, pid3, pid4}), 4)
        pool.shutdown()

        # Without the fork server a fresh worker is forked from this
        # process as it is.
        set_snapshot('direct')
        direct = self.make_pool(worker_report)
        direct.props.fork_server = False
        direct.props.max_worker_calls = 1
        with direct_forks(self):
            self.assertTrue(direct.start())
            set_snapshot('direct, later')
            pid5, seen5 = self.call_report(direct)
            pid6, seen6 = self.call_report(direct)
        self.assertNotEqual(pid5, pid6)
        self.assertEqual(seen5, 'direct', 'forked at start()')
        self.assertEqual(seen6, 'direct, later', 'forked at the call')


def main():
    loader = unittest.TestLoader()
    if len(sys.argv) > 1:
        suite = loader.loadTestsFromNames(sys.argv[1:], sys.modules[__name__])
    else:
        suite = loader.loadTestsFromTestCase(TestForkServer)
    return run_tap(suite)


if __name__ == '__main__':
    started = time.monotonic()
    status = main()
    sys.stdout.write('# %.1f s\n' % (time.monotonic() - started))
    sys.exit(status)
