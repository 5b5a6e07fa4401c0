// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Drives DcDetachedCode through GJS and the built typelib.  Every worker
// function below runs in a forked copy of this gjs process, so it can only
// report back through its return value or a thrown error.

imports.gi.versions.GLib = '2.0';
imports.gi.versions.Gio = '2.0';
imports.gi.versions.Dc = '1.0';
const {Dc, Gio, GLib} = imports.gi;

// Waits are bounded by this, never by how fast a worker is: a loaded
// two-core machine may take seconds to schedule a fork.
const TIMEOUT_S = 60;

const OWN_PID = new Gio.Credentials().get_unix_pid();

function ownPid() {
    return new Gio.Credentials().get_unix_pid();
}

function isPrime(n) {
    if (n < 2)
        return false;
    for (let d = 2; d * d <= n; d++) {
        if (n % d === 0)
            return false;
    }
    return true;
}

// ---- assertions ----

class AssertionError extends Error {
    constructor(message) {
        super(message);
        this.name = 'AssertionError';
    }
}

function assert(cond, message) {
    if (!cond)
        throw new AssertionError(message ?? 'assertion failed');
}

function assertEqual(actual, expected, message) {
    const a = JSON.stringify(actual);
    const e = JSON.stringify(expected);
    if (a !== e)
        throw new AssertionError(`${message ?? 'not equal'}: got ${a}, expected ${e}`);
}

function describe(outcome) {
    if (outcome.error) {
        const e = outcome.error;
        return `error ${e.constructor.name} domain=${e.domain} code=${e.code}: ${e.message}`;
    }
    return `value ${outcome.value.print(true)}`;
}

function assertValue(outcome) {
    assert(!outcome.error, `call failed: ${outcome.error && describe(outcome)}`);
    return outcome.value.deepUnpack();
}

function assertValueFds(outcome) {
    assert(!outcome.error, `call failed: ${outcome.error && describe(outcome)}`);
    return outcome.value;
}

function assertDcError(outcome, code) {
    assert(outcome.error, `call succeeded: ${outcome.value && describe(outcome)}`);
    assert(outcome.error instanceof GLib.Error, `not a GLib.Error: ${describe(outcome)}`);
    assert(outcome.error.matches(Dc.DetachedCodeError, code),
        `expected DcDetachedCodeError ${code}, got ${describe(outcome)}`);
    assertEqual(GLib.quark_to_string(outcome.error.domain), 'dc-detached-code-error-quark');
}

// ---- main loop helpers ----

function spinUntil(predicate, what, timeout = TIMEOUT_S) {
    const deadline = GLib.get_monotonic_time() + timeout * 1000000;
    const context = GLib.MainContext.default();
    // Bounds how long a blocking iteration may sleep when no pool source
    // fires; it costs latency, never correctness.
    const wakeup = GLib.timeout_add(GLib.PRIORITY_DEFAULT, 20, () => GLib.SOURCE_CONTINUE);
    try {
        while (!predicate()) {
            if (GLib.get_monotonic_time() > deadline)
                throw new AssertionError(`timed out after ${timeout} s waiting for ${what}`);
            context.iteration(true);
        }
    } finally {
        GLib.source_remove(wakeup);
    }
}

const cleanups = [];

function makePool(func) {
    const pool = Dc.DetachedCode.new(func);
    cleanups.push(() => pool.shutdown());
    return pool;
}

// The callback only records: an exception thrown inside it would be logged
// by gjs rather than fail the test.
function call(pool, args, sink = [], priority = GLib.PRIORITY_DEFAULT, cancellable = null) {
    pool.call_async(args, priority, cancellable, (source, result) => {
        try {
            sink.push({value: source.call_finish(result)});
        } catch (e) {
            sink.push({error: e});
        }
    });
    return sink;
}

function callSync(pool, args) {
    const sink = call(pool, args);
    spinUntil(() => sink.length === 1, 'one call to complete');
    return sink[0];
}

function makeFdPool(func) {
    const pool = Dc.DetachedCode.new_with_fds(func);
    cleanups.push(() => pool.shutdown());
    return pool;
}

// Like call(), with descriptors: the value is [variant, fdList or null].
function callFds(pool, args, fdList, sink = []) {
    pool.call_with_unix_fd_list_async(args, fdList, GLib.PRIORITY_DEFAULT, null, (source, result) => {
        try {
            sink.push({value: source.call_with_unix_fd_list_finish(result)});
        } catch (e) {
            sink.push({error: e});
        }
    });
    return sink;
}

function callFdsSync(pool, args, fdList) {
    const sink = callFds(pool, args, fdList);
    spinUntil(() => sink.length === 1, 'one call with descriptors to complete');
    return sink[0];
}

// The read end of a pipe that holds text, its write end closed.  GJS
// cannot make a pipe itself: GLib.unix_open_pipe() takes its array in and
// gives nothing back.  A printf child's standard output is such a pipe;
// without DO_NOT_REAP_CHILD GLib reaps the child itself, with no child
// watch, which matters in a forked worker.
function pipeHolding(text) {
    const [, , stdin, stdout, stderr] = GLib.spawn_async_with_pipes(null,
        ['printf', '%s', text], null, GLib.SpawnFlags.SEARCH_PATH, null);
    GLib.close(stdin);
    GLib.close(stderr);
    return stdout;
}

// Reads fd to its end and closes it: fd is the caller's.
function readAll(fd) {
    const stream = new Gio.UnixInputStream({fd, close_fd: true});
    const chunks = [];
    for (;;) {
        const bytes = stream.read_bytes(4096, null);
        if (bytes.get_size() === 0)
            break;
        chunks.push(...bytes.toArray());
    }
    stream.close(null);
    // Decoded whole: this gjs's TextDecoder has no streaming mode.
    return new TextDecoder().decode(new Uint8Array(chunks));
}

function waitReaped(pid) {
    // A zombie keeps its /proc entry until the pool's child watch reaps it;
    // afterwards the pid may be reused, but not by a child of ours.
    spinUntil(() => {
        let stat;
        try {
            stat = new TextDecoder().decode(GLib.file_get_contents(`/proc/${pid}/stat`)[1]);
        } catch (e) {
            return true;
        }
        const ppid = parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        return ppid !== OWN_PID;
    }, `worker ${pid} to be reaped`);
}

function assertCancelled(outcome) {
    assert(outcome.error, `call succeeded: ${outcome.value && describe(outcome)}`);
    assert(outcome.error.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED),
        `expected G_IO_ERROR_CANCELLED, got ${describe(outcome)}`);
}

function recordExits(pool) {
    const exited = [];
    pool.connect('worker-exited', (_pool, pid, status) => exited.push([pid, status]));
    return exited;
}

// A scratch directory for workerGate, emptied and removed after the test.
function makeDir() {
    const dir = GLib.dir_make_tmp('dc-gjs-XXXXXX');
    cleanups.push(() => {
        const file = Gio.File.new_for_path(dir);
        const children = file.enumerate_children('standard::name',
            Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, null);
        let info;
        while ((info = children.next_file(null)) !== null)
            children.get_child(info).delete(null);
        children.close(null);
        file.delete(null);
    });
    return dir;
}

function gateArgs(dir, i, wait = false) {
    return new GLib.Variant('(sib)', [dir, i, wait]);
}

function hasStarted(dir, i) {
    return GLib.file_test(`${dir}/started-${i}`, GLib.FileTest.EXISTS);
}

function waitStarted(dir, i) {
    spinUntil(() => hasStarted(dir, i), `call ${i} to start in a worker`);
}

function release(dir) {
    GLib.file_set_contents(`${dir}/release`, '');
}

// ---- worker functions ----

function workerIsPrime(args) {
    const [n] = args.deepUnpack();
    return new GLib.Variant('(bi)', [isPrime(n), ownPid()]);
}

function workerEchoPid(args) {
    const [i] = args.deepUnpack();
    return new GLib.Variant('(ii)', [i, ownPid()]);
}

function workerBehave(args) {
    const [what] = args.deepUnpack();
    switch (what) {
    case 'gerror':
        throw new GLib.Error(Gio.IOErrorEnum, Gio.IOErrorEnum.NOT_FOUND, 'nope');
    case 'js-error':
        throw new RangeError('not a GLib.Error');
    case 'null':
        return null;
    case 'die':
        // System.exit() would run the host's exit handlers, and gjs's wait
        // for SpiderMonkey helper threads that were not forked: the worker
        // hangs.  A signal ends it without running anything.
        GLib.spawn_sync(null, ['kill', '-KILL', `${ownPid()}`], null,
            GLib.SpawnFlags.SEARCH_PATH, null);
        throw new Error('still alive after SIGKILL');
    case 'say-die':
        printerr('first words\nlast words from gjs');
        GLib.spawn_sync(null, ['kill', '-KILL', `${ownPid()}`], null,
            GLib.SpawnFlags.SEARCH_PATH, null);
        throw new Error('still alive after SIGKILL');
    case 'env':
        return new GLib.Variant('(msms)', [GLib.getenv('DC_TEST_VAR'), GLib.getenv('DC_TEST_GONE')]);
    case 'socket':
        Gio.Socket.new(Gio.SocketFamily.IPV4, Gio.SocketType.STREAM, Gio.SocketProtocol.TCP).close();
        return new GLib.Variant('(si)', ['socket made', ownPid()]);
    default:
        return new GLib.Variant('(si)', [what, ownPid()]);
    }
}

function workerSleepForever(args) {
    const [path] = args.deepUnpack();
    GLib.file_set_contents(path, 'started');
    // Only shutdown() ends this; bounded so that a broken shutdown leaves no
    // worker behind for long.
    GLib.usleep(TIMEOUT_S * 1000000);
    return new GLib.Variant('(s)', [path]);
}

function workerGate(args) {
    // Leaves a trace that the call ran; a waiting call then blocks until the
    // test creates the release file, so whether a call is running, queued or
    // done never depends on how fast the machine is.  The wait allocates as
    // little as it can: a collection in a forked gjs may never return.
    const [dir, i, wait] = args.deepUnpack();
    GLib.file_set_contents(`${dir}/started-${i}`, 'started');
    if (wait) {
        const releasePath = `${dir}/release`;
        const deadline = GLib.get_monotonic_time() + TIMEOUT_S * 1000000;
        while (!GLib.file_test(releasePath, GLib.FileTest.EXISTS) &&
               GLib.get_monotonic_time() < deadline)
            GLib.usleep(10000);
    }
    return new GLib.Variant('(ii)', [i, ownPid()]);
}

function workerIdentity(args) {
    return args;
}

// A DcCodeFdFunc: GJS takes the (out) out_fd_list as the second member of
// the returned array.  fdList.get() returns a duplicate, which this
// function owns; the list's own copies close with the list.
function workerPipes(args, fdList) {
    const [handles] = args.deepUnpack();
    const texts = handles.map(h => readAll(fdList.get(h)));
    return [
        new GLib.Variant('(asi)', [texts, ownPid()]),
        Gio.UnixFDList.new_from_array([pipeHolding('from the worker')]),
    ];
}

function workerFdShapes(args, fdList) {
    const [what] = args.deepUnpack();
    if (what === 'bare')
        return new GLib.Variant('(sb)', [what, fdList === null]);
    return [new GLib.Variant('(sb)', [what, fdList === null]), null];
}

// ("double", n) -> (2n); ("fail", n) throws; ("sleep", ms) -> (pid).
function workerMap(args) {
    const [command, n] = args.deepUnpack();
    if (command === 'double')
        return new GLib.Variant('(i)', [2 * n]);
    if (command === 'fail')
        throw new GLib.Error(Gio.IOErrorEnum, Gio.IOErrorEnum.NOT_FOUND, `item ${n}`);
    if (command === 'sleep') {
        GLib.usleep(n * 1000);
        return new GLib.Variant('(i)', [ownPid()]);
    }
    throw new Error(`unknown command ${command}`);
}

function mapItems(commands) {
    return new GLib.Variant('a(si)', commands);
}

function mapSync(pool, items, chunkSize = 0, cancellable = null) {
    const sink = [];
    pool.map_async(items, chunkSize, GLib.PRIORITY_DEFAULT, cancellable, (source, result) => {
        try {
            sink.push({value: source.map_finish(result)});
        } catch (e) {
            sink.push({error: e});
        }
    });
    assertEqual(sink.length, 0, 'the callback ran inside map_async()');
    spinUntil(() => sink.length === 1, 'a map to complete');
    return sink[0];
}

// Runs the main loop until @promise settles: {value} or {error}.
function settle(promise, what) {
    let outcome = null;
    promise.then(value => {
        outcome = {value};
    }, error => {
        outcome = {error};
    });
    spinUntil(() => outcome !== null, what);
    return outcome;
}

// ---- tests ----

const tests = [];

function test(name, func) {
    tests.push({name, func});
}

test('synopsis: is_prime in a worker', () => {
    const pool = makePool(workerIsPrime);
    const notPrime = call(pool, new GLib.Variant('(t)', [123454321]));
    const prime = call(pool, new GLib.Variant('(t)', [1000003]));
    spinUntil(() => notPrime.length && prime.length, 'both calls');

    const [isP, pid] = assertValue(notPrime[0]);
    assertEqual(isP, false, '123454321 = 11111 * 11111 is not prime');
    assert(pid !== OWN_PID, 'the code ran in this process');
    const [isP2, pid2] = assertValue(prime[0]);
    assertEqual(isP2, true, '1000003 is prime');
    assertEqual(pid2, pid, 'one worker by default');
    assertEqual(pool.get_worker_pids(), [pid]);
});

test('several workers', () => {
    const pool = makePool(workerEchoPid);
    pool.min_workers = 2;
    pool.max_workers = 4;
    const spawned = [];
    pool.connect('worker-spawned', (_pool, pid) => spawned.push(pid));
    assert(pool.start());
    assertEqual(pool.n_workers, 2);

    const sink = [];
    const nCalls = 60;
    for (let i = 0; i < nCalls; i++)
        call(pool, new GLib.Variant('(i)', [i]), sink);
    spinUntil(() => sink.length === nCalls, `all ${nCalls} calls`);

    const values = sink.map(assertValue);
    assertEqual(values.map(([i]) => i).sort((a, b) => a - b), [...Array(nCalls).keys()]);
    const used = new Set(values.map(([, pid]) => pid));
    assert(!used.has(OWN_PID), 'a call ran in this process');
    // With one call per worker, calls queued at once cannot all land on a
    // single worker.
    assert(used.size >= 2, `only ${used.size} worker took calls`);
    for (const pid of used)
        assert(spawned.includes(pid), `${pid} was never announced by worker-spawned`);

    const pids = pool.get_worker_pids();
    assertEqual(new Set(pids).size, pids.length, 'pids are distinct');
    assert(pids.length >= 2 && pids.length <= 4, `${pids.length} workers`);
    assertEqual(pids.length, pool.n_workers);
    assert(!pids.includes(OWN_PID));
});

test('results in call order with one worker', () => {
    const pool = makePool(workerEchoPid);
    const sink = [];
    const nCalls = 40;
    for (let i = 0; i < nCalls; i++)
        call(pool, new GLib.Variant('(i)', [i]), sink);
    spinUntil(() => sink.length === nCalls, `all ${nCalls} calls`);
    assertEqual(sink.map(o => assertValue(o)[0]), [...Array(nCalls).keys()]);
});

test('a thrown GLib.Error keeps domain, code and message', () => {
    const pool = makePool(workerBehave);
    const outcome = callSync(pool, new GLib.Variant('(s)', ['gerror']));
    assert(outcome.error instanceof GLib.Error, describe(outcome));
    assert(outcome.error.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.NOT_FOUND), describe(outcome));
    assertEqual(GLib.quark_to_string(outcome.error.domain), 'g-io-error-quark');
    assertEqual(outcome.error.code, Gio.IOErrorEnum.NOT_FOUND);
    assertEqual(outcome.error.message, 'nope');
});

test('a thrown JS Error comes back as that JS Error', () => {
    // gjs turns a JS exception leaving a throwing callback into a GError of
    // its own domain (gjs-js-error-quark, code = the error class); the
    // domain travels by name, and gjs in the parent rebuilds the class.
    const pool = makePool(workerBehave);
    const [, before] = assertValue(callSync(pool, new GLib.Variant('(s)', ['ok'])));
    const outcome = callSync(pool, new GLib.Variant('(s)', ['js-error']));
    assert(outcome.error, describe(outcome));
    assert(outcome.error instanceof RangeError, describe(outcome));
    assertEqual(outcome.error.message, 'not a GLib.Error');
    const [, after] = assertValue(callSync(pool, new GLib.Variant('(s)', ['ok'])));
    assertEqual(after, before, 'the worker survives a failed call');
});

test('returning null is FAILED', () => {
    const pool = makePool(workerBehave);
    const outcome = callSync(pool, new GLib.Variant('(s)', ['null']));
    assertDcError(outcome, Dc.DetachedCodeError.FAILED);
    assertValue(callSync(pool, new GLib.Variant('(s)', ['ok'])));
});

test('a dying worker\'s error ends with its captured stderr', () => {
    const pool = makePool(workerBehave);
    pool.setup_flags = Dc.SetupFlags.CAPTURE_STDERR;
    assert(pool.start());
    const [pid] = pool.get_worker_pids();

    const outcome = callSync(pool, new GLib.Variant('(s)', ['say-die']));
    assertDcError(outcome, Dc.DetachedCodeError.WORKER_DIED);
    assert(outcome.error.message.endsWith(
        `--- last output of worker process ${pid} ---\nfirst words\nlast words from gjs`),
    outcome.error.message);
    waitReaped(pid);
    assertValue(callSync(pool, new GLib.Variant('(s)', ['ok'])));
});

test('a worker that dies fails its call with WORKER_DIED', () => {
    const pool = makePool(workerBehave);
    const exited = [];
    pool.connect('worker-exited', (_pool, pid, status) => exited.push([pid, status]));
    assert(pool.start());
    const [pid] = pool.get_worker_pids();

    const outcome = callSync(pool, new GLib.Variant('(s)', ['die']));
    assertDcError(outcome, Dc.DetachedCodeError.WORKER_DIED);
    assert(outcome.error.message.includes(`${pid}`), outcome.error.message);
    assert(outcome.error.message.includes('signal 9'), outcome.error.message);
    assertEqual(pool.n_workers, 0);
    assertEqual(exited.length, 1, 'worker-exited before the call failed');
    assertEqual(exited[0][0], pid);
    // A wait status for SIGKILL, without core dump.
    assertEqual(exited[0][1] & 0x7f, 9);
    waitReaped(pid);

    const [what, newPid] = assertValue(callSync(pool, new GLib.Variant('(s)', ['ok'])));
    assertEqual(what, 'ok');
    assert(newPid !== pid, 'a fresh worker took the call');
    assertEqual(pool.get_worker_pids(), [newPid]);
});

test('the sandbox property, and a violation is SANDBOX', () => {
    const pool = makePool(workerBehave);
    assertEqual(pool.sandbox, Dc.SandboxFlags.NONE);
    const notified = [];
    pool.connect('notify::sandbox', () => notified.push('sandbox'));
    pool.sandbox = Dc.SandboxFlags.NO_NETWORK | Dc.SandboxFlags.NO_EXEC;
    pool.sandbox = Dc.SandboxFlags.NO_NETWORK | Dc.SandboxFlags.NO_EXEC;
    assertEqual(notified, ['sandbox']);
    assertEqual(pool.get_sandbox(), Dc.SandboxFlags.NO_NETWORK | Dc.SandboxFlags.NO_EXEC);

    const [, pid] = assertValue(callSync(pool, new GLib.Variant('(s)', ['ok'])));
    const outcome = callSync(pool, new GLib.Variant('(s)', ['socket']));
    assertDcError(outcome, Dc.DetachedCodeError.SANDBOX);
    assert(outcome.error.message.includes(
        `Worker process ${pid} was stopped by the sandbox: it called socket()`), outcome.error.message);
    const [what, newPid] = assertValue(callSync(pool, new GLib.Variant('(s)', ['ok'])));
    assertEqual(what, 'ok');
    assert(newPid !== pid, 'a fresh worker took the call');
});

test('setenv and unsetenv reach the worker only', () => {
    GLib.setenv('DC_TEST_GONE', 'parent', true);
    cleanups.push(() => GLib.unsetenv('DC_TEST_GONE'));
    const pool = makePool(workerBehave);
    pool.setenv('DC_TEST_VAR', 'hello', true);
    pool.unsetenv('DC_TEST_GONE');
    const values = assertValue(callSync(pool, new GLib.Variant('(s)', ['env'])));
    assertEqual(values, ['hello', null]);
    assertEqual(GLib.getenv('DC_TEST_VAR'), null);
    assertEqual(GLib.getenv('DC_TEST_GONE'), 'parent');
});

test('shutdown fails every call with SHUTDOWN', () => {
    const dir = GLib.dir_make_tmp('dc-gjs-XXXXXX');
    const started = i => `${dir}/started-${i}`;
    cleanups.push(() => {
        for (let i = 0; i < 5; i++)
            GLib.unlink(started(i));
        GLib.rmdir(dir);
    });

    const pool = makePool(workerSleepForever);
    pool.max_workers = 2;
    const spawned = [];
    pool.connect('worker-spawned', (_pool, pid) => spawned.push(pid));
    const sink = [];
    for (let i = 0; i < 5; i++)
        call(pool, new GLib.Variant('(s)', [started(i)]), sink);

    // Shut down only once two calls really run, so both the in-flight and
    // the queued paths are exercised.
    const nStarted = () => [0, 1, 2, 3, 4].filter(i => GLib.file_test(started(i), GLib.FileTest.EXISTS)).length;
    spinUntil(() => nStarted() >= 2, 'two calls to start in the workers');
    assertEqual(sink.length, 0, 'no call can have completed yet');
    pool.shutdown();
    assertEqual(pool.n_workers, 0);
    assertEqual(pool.get_worker_pids(), []);

    spinUntil(() => sink.length === 5, 'all calls to fail');
    for (const outcome of sink)
        assertDcError(outcome, Dc.DetachedCodeError.SHUTDOWN);
    assertEqual(nStarted(), 2, 'queued calls never reached a worker');
    assertEqual(spawned.length, 2);
    spawned.forEach(waitReaped);
});

test('flat marshaller', () => {
    const pool = makePool(workerIdentity);
    pool.marshaller = Dc.Marshaller.FLAT;
    assertEqual(pool.marshaller, Dc.Marshaller.FLAT);

    for (const args of [['abc', null], ['', 'x y\nz'], ['\u00e9t\u00e9', '']]) {
        const outcome = callSync(pool, new GLib.Variant('(sms)', args));
        assert(!outcome.error, describe(outcome));
        assertEqual(outcome.value.get_type_string(), '(sms)');
        assertEqual(outcome.value.deepUnpack(), args);
    }

    assertDcError(callSync(pool, new GLib.Variant('(i)', [1])), Dc.DetachedCodeError.MARSHAL);
    assertEqual(assertValue(callSync(pool, new GLib.Variant('(s)', ['still']))), ['still']);
});

test('properties and notify', () => {
    const pool = makePool(workerEchoPid);
    assertEqual(pool.min_workers, 1);
    assertEqual(pool.max_workers, 1);
    assertEqual(pool.stream, Dc.Stream.AUTO);
    assertEqual(pool.marshaller, Dc.Marshaller.VARIANT);
    assertEqual(pool.exit_on_die, false);
    assertEqual(pool.setup_flags, Dc.SetupFlags.NONE);
    assertEqual(pool.n_workers, 0);

    const notified = [];
    pool.connect('notify', (_pool, pspec) => notified.push(pspec.name));
    const spawned = [];
    pool.connect('worker-spawned', (_pool, pid) => spawned.push(pid));

    pool.min_workers = 2;
    pool.set_max_workers(3);
    pool.max_workers = 3;   // unchanged: explicit notify stays quiet
    assertEqual(notified, ['min-workers', 'max-workers']);

    notified.length = 0;
    assert(pool.start());
    assert(notified.includes('n-workers'), `notified: ${notified}`);
    assertEqual(pool.n_workers, 2);
    assertEqual(spawned.length, 2);
    assertEqual([...pool.get_worker_pids()].sort(), [...spawned].sort());
});

test('the pool copy inside a worker is inert', () => {
    // The worker holds a copy of this pool and of the default main context;
    // disposing or shutting down the copy, or waking the copied context,
    // must not reach the parent's processes or the channel.
    //
    // No System.gc() here: a full collection in a forked gjs signals
    // SpiderMonkey helper threads that were not forked and never returns.
    let pool = null;
    let meddled = false;   // per worker: each has its own copy
    pool = makePool(() => {
        if (!meddled) {
            meddled = true;
            pool.shutdown();
            // gjs refuses (with a critical) any later use of a disposed
            // wrapper, hence only once.
            pool.run_dispose();
            GLib.idle_add(GLib.PRIORITY_DEFAULT, () => GLib.SOURCE_REMOVE);
            GLib.MainContext.default().wakeup();
        }
        return new GLib.Variant('(i)', [ownPid()]);
    });
    const [pid1] = assertValue(callSync(pool, null));
    const [pid2] = assertValue(callSync(pool, null));
    assertEqual(pid2, pid1, 'the worker survived its meddling');
    assertEqual(pool.get_worker_pids(), [pid1]);
    assertEqual(pool.n_workers, 1);
});

test('a cancelled queued call never runs', () => {
    const pool = makePool(workerGate);
    const dir = makeDir();
    const first = call(pool, gateArgs(dir, 0, true));
    const cancellable = new Gio.Cancellable();
    const queued = call(pool, gateArgs(dir, 1), [], GLib.PRIORITY_DEFAULT, cancellable);
    const after = call(pool, gateArgs(dir, 2));
    assertEqual(pool.get_n_queued(), 2);
    waitStarted(dir, 0);

    cancellable.cancel();
    spinUntil(() => queued.length, 'the queued call to be cancelled');
    assertCancelled(queued[0]);
    // The only worker is still blocked in the first call.
    assertEqual(first.length + after.length, 0, 'calls completed before the release');
    assertEqual(pool.n_queued, 1);

    release(dir);
    spinUntil(() => first.length && after.length, 'the other calls');
    assertEqual(assertValue(first[0])[0], 0);
    assertEqual(assertValue(after[0])[0], 2);
    assertEqual(queued.length, 1, 'a cancelled call completes exactly once');
    assert(!hasStarted(dir, 1), 'the cancelled call reached a worker');
});

test('a cancelled running call completes at once; its result is dropped', () => {
    const pool = makePool(workerGate);
    const exited = recordExits(pool);
    const dir = makeDir();
    const cancellable = new Gio.Cancellable();
    const running = call(pool, gateArgs(dir, 0, true), [], GLib.PRIORITY_DEFAULT, cancellable);
    waitStarted(dir, 0);
    const [pid] = pool.get_worker_pids();

    cancellable.cancel();
    // Completes while the worker is still blocked in the call.
    spinUntil(() => running.length, 'the running call to be cancelled');
    assertCancelled(running[0]);
    assertEqual(pool.get_worker_pids(), [pid]);

    const next = call(pool, gateArgs(dir, 1));
    release(dir);
    spinUntil(() => next.length, 'the next call');
    // The reply to the cancelled call was dropped, not handed to this one.
    assertEqual(assertValue(next[0]), [1, pid]);
    assertEqual(running.length, 1, 'a cancelled call completes exactly once');
    assertEqual(exited, []);
});

test('kill-on-cancel kills the worker; worker-exited reports SIGKILL', () => {
    const pool = makePool(workerGate);
    assertEqual(pool.kill_on_cancel, false);
    pool.kill_on_cancel = true;
    const exited = recordExits(pool);
    const dir = makeDir();
    const cancellable = new Gio.Cancellable();
    const running = call(pool, gateArgs(dir, 0, true), [], GLib.PRIORITY_DEFAULT, cancellable);
    const queued = call(pool, gateArgs(dir, 1));
    waitStarted(dir, 0);
    const [pid] = pool.get_worker_pids();

    cancellable.cancel();
    spinUntil(() => running.length, 'the running call to be cancelled');
    assertCancelled(running[0]);
    // Never released: only the kill ends that worker before its deadline.
    spinUntil(() => exited.length, 'worker-exited');
    assertEqual(exited[0][0], pid);
    assertEqual(exited[0][1] & 0x7f, 9, 'killed by SIGKILL');
    waitReaped(pid);

    spinUntil(() => queued.length, 'the queued call');
    const [i, newPid] = assertValue(queued[0]);
    assertEqual(i, 1);
    assert(newPid !== pid, 'the queued call went to the killed worker');
});

test('call-timeout fails a call with TIMED_OUT and kills its worker', () => {
    const pool = makePool(workerGate);
    const exited = recordExits(pool);
    const dir = makeDir();
    pool.call_timeout = 500;
    assertEqual(pool.get_call_timeout(), 500);
    const stuck = call(pool, gateArgs(dir, 0, true));
    const [pid] = pool.get_worker_pids();
    spinUntil(() => stuck.length, 'the call to time out');
    assertDcError(stuck[0], Dc.DetachedCodeError.TIMED_OUT);
    spinUntil(() => exited.length, 'worker-exited');
    assertEqual(exited[0][0], pid);
    assertEqual(exited[0][1] & 0x7f, 9, 'killed by SIGKILL');

    // No limit for the next call: a loaded machine may be slow to fork.
    pool.call_timeout = 0;
    release(dir);
    const [, newPid] = assertValue(callSync(pool, gateArgs(dir, 1)));
    assert(newPid !== pid, 'a fresh worker took the next call');
});

test('max-worker-calls recycles workers without failing a call', () => {
    const pool = makePool(workerEchoPid);
    pool.max_worker_calls = 2;
    const exited = recordExits(pool);
    const sink = [];
    const nCalls = 8;
    for (let i = 0; i < nCalls; i++)
        call(pool, new GLib.Variant('(i)', [i]), sink);
    spinUntil(() => sink.length === nCalls, `all ${nCalls} calls`);
    const served = new Map();
    for (const outcome of sink) {
        const [i, pid] = assertValue(outcome);
        served.set(pid, [...served.get(pid) ?? [], i]);
    }
    assertEqual(served.size, 4, 'workers used');
    for (const calls of served.values())
        assertEqual(calls.length, 2, 'calls per worker');
    // All but the last have left on their own; they leave through _exit(),
    // never through the host's exit path.
    spinUntil(() => exited.length === 3, 'the recycled workers to exit');
    for (const [, status] of exited)
        assertEqual(status, 0, 'wait status of a recycled worker');
});

test('pipeline-depth keeps results in call order', () => {
    const pool = makePool(workerEchoPid);
    pool.pipeline_depth = 8;
    const sink = [];
    const nCalls = 40;
    for (let i = 0; i < nCalls; i++)
        call(pool, new GLib.Variant('(i)', [i]), sink);
    assertEqual(pool.n_busy, 1);
    assertEqual(pool.n_queued, nCalls - 8);
    spinUntil(() => sink.length === nCalls, `all ${nCalls} calls`);
    const values = sink.map(assertValue);
    assertEqual(values.map(([i]) => i), [...Array(nCalls).keys()]);
    assertEqual(new Set(values.map(([, pid]) => pid)).size, 1);
    assertEqual([pool.n_busy, pool.n_queued], [0, 0]);
});

test('max-queued refuses calls beyond it with BUSY; the pool goes on', () => {
    const pool = makePool(workerGate);
    assertEqual(pool.max_queued, 0);
    const notified = [];
    pool.connect('notify::max-queued', obj => notified.push(obj.max_queued));
    pool.set_max_queued(2);
    pool.max_queued = 2;
    assertEqual([pool.get_max_queued(), notified], [2, [2]]);
    const dir = makeDir();

    // One call runs (held at the gate), two wait, the rest are refused.
    const accepted = [0, 1, 2].map(i => call(pool, gateArgs(dir, i, true)));
    assertEqual(pool.n_queued, 2);
    const refused = [];
    for (let i = 3; i < 6; i++) {
        refused.push(call(pool, gateArgs(dir, i)));
        assertEqual(refused.at(-1).length, 0, 'not inside call_async()');
    }
    assertEqual(pool.n_queued, 2);
    spinUntil(() => refused.every(sink => sink.length > 0), 'the refusals');
    for (const [outcome] of refused) {
        assertDcError(outcome, Dc.DetachedCodeError.BUSY);
        assert(outcome.error.message.includes('max-queued'), outcome.error.message);
    }
    assertEqual(accepted.map(sink => sink.length), [0, 0, 0], 'the accepted calls still wait');

    // Lowered below the queue's length: nothing is dropped, new calls wait
    // for room.
    pool.max_queued = 1;
    const lowered = call(pool, gateArgs(dir, 6));
    spinUntil(() => lowered.length > 0, 'a refusal under the lowered bound');
    assertDcError(lowered[0], Dc.DetachedCodeError.BUSY);
    assertEqual(pool.n_queued, 2);

    release(dir);
    spinUntil(() => accepted.every(sink => sink.length > 0), 'the accepted calls');
    assertEqual(accepted.map(([outcome]) => assertValue(outcome)[0]), [0, 1, 2]);
    for (let i = 3; i < 7; i++)
        assert(!hasStarted(dir, i), `refused call ${i} ran`);

    // Room again: the pool takes calls.
    const after = [10, 11].map(i => call(pool, gateArgs(dir, i)));
    spinUntil(() => after.every(sink => sink.length > 0), 'calls after the refusals');
    assertEqual(after.map(([outcome]) => assertValue(outcome)[0]), [10, 11]);

    // Each callback ran exactly once.
    let settled = false;
    GLib.timeout_add(GLib.PRIORITY_DEFAULT, 100, () => {
        settled = true;
        return GLib.SOURCE_REMOVE;
    });
    spinUntil(() => settled, 'the loop to settle');
    assertEqual([...accepted, ...refused, lowered, ...after].map(sink => sink.length),
        Array(9).fill(1));
});

test('descriptor round trip', () => {
    const pool = makeFdPool(workerPipes);
    const fdList = Gio.UnixFDList.new_from_array([pipeHolding('first'), pipeHolding('second')]);
    // `h` values index the list, as in GDBus.
    const outcome = callFdsSync(pool, new GLib.Variant('(ah)', [[1, 0]]), fdList);
    assert(!outcome.error, `call failed: ${outcome.error && describe(outcome)}`);
    const [value, outList] = outcome.value;
    const [texts, pid] = value.deepUnpack();
    assertEqual(texts, ['second', 'first']);
    assert(pid !== OWN_PID, 'the code ran in this process');
    assert(outList !== null, 'no descriptors came back');
    assertEqual(outList.get_length(), 1);
    assertEqual(readAll(outList.get(0)), 'from the worker');
    assertEqual(fdList.get_length(), 2, 'the caller\'s list changed');
});

test('a call without descriptors, and a bare return value', () => {
    const pool = makeFdPool(workerFdShapes);
    const outcome = callFdsSync(pool, new GLib.Variant('(s)', ['pair']), null);
    const [value, outList] = assertValueFds(outcome);
    assertEqual(value.deepUnpack(), ['pair', true]);
    assertEqual(outList, null);
    // gjs wants an array [value, fdList] from a callback with an (out)
    // parameter, and throws when it gets a bare variant.
    const bare = callFdsSync(pool, new GLib.Variant('(s)', ['bare']), null);
    assert(bare.error instanceof Error && !(bare.error instanceof GLib.Error),
        `expected a JS Error, got ${bare.error ? describe(bare) : 'a value'}`);
    assert(bare.error.message.includes('Array'), bare.error.message);
});

test('descriptors are refused on the pipe stream and by a plain pool', () => {
    const spawned = [];
    const piped = makeFdPool(workerFdShapes);
    piped.stream = Dc.Stream.PIPE;
    piped.connect('worker-spawned', (_pool, pid) => spawned.push(pid));
    assertDcError(callFdsSync(piped, new GLib.Variant('(sh)', ['x', 0]),
        Gio.UnixFDList.new_from_array([pipeHolding('x')])), Dc.DetachedCodeError.MARSHAL);

    const plain = makePool(workerIdentity);
    plain.connect('worker-spawned', (_pool, pid) => spawned.push(pid));
    assertDcError(callFdsSync(plain, new GLib.Variant('(h)', [0]),
        Gio.UnixFDList.new_from_array([pipeHolding('x')])), Dc.DetachedCodeError.MARSHAL);
    assertEqual(spawned, [], 'a refused call reached a worker');
});

test('a 1 MiB argument through a memfd', () => {
    const pool = makePool(workerIdentity);
    assertEqual(pool.memfd_threshold, 0, 'off by default');
    pool.memfd_threshold = 64 * 1024;
    const data = new Uint8Array(1 << 20);
    for (let i = 0; i < data.length; i++)
        data[i] = (i * 7 + (i >> 11)) & 0xff;
    const bytes = new GLib.Bytes(data);
    const args = GLib.Variant.new_tuple([
        GLib.Variant.new_from_bytes(new GLib.VariantType('ay'), bytes, true)]);
    const outcome = callSync(pool, args);
    assert(!outcome.error, `call failed: ${outcome.error && describe(outcome)}`);
    assertEqual(outcome.value.get_type_string(), '(ay)');
    assert(outcome.value.get_child_value(0).get_data_as_bytes().equal(bytes), 'the bytes changed');
});

// ---- fork-server: the worker template ----

function procStat(pid) {
    // [state, ppid], or null once the process is gone.
    let stat;
    try {
        stat = new TextDecoder().decode(GLib.file_get_contents(`/proc/${pid}/stat`)[1]);
    } catch (e) {
        return null;
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [fields[0], parseInt(fields[1])];
}

// The pids of every process whose parent is this one, zombies too, sorted.
function children() {
    const dir = Gio.File.new_for_path('/proc').enumerate_children('standard::name',
        Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, null);
    const found = [];
    let info;
    while ((info = dir.next_file(null)) !== null) {
        const name = info.get_name();
        if (!/^[0-9]+$/.test(name))
            continue;
        const st = procStat(parseInt(name));
        if (st !== null && st[1] === OWN_PID)
            found.push(parseInt(name));
    }
    dir.close(null);
    return found.sort((a, b) => a - b);
}

function sorted(pids) {
    return [...pids].sort((a, b) => a - b);
}

function waitChildren(expected, what) {
    const want = JSON.stringify(sorted(expected));
    spinUntil(() => JSON.stringify(children()) === want,
        `${what} (children ${JSON.stringify(children())}, expected ${want})`, 30);
}

function threadCount(pid) {
    const status = new TextDecoder().decode(GLib.file_get_contents(`/proc/${pid}/status`)[1]);
    return parseInt(status.split('\n').find(l => l.startsWith('Threads:')).split(/\s+/)[1]);
}

// The one child of this process that is not a worker.
function templateOf(pool) {
    const workers = pool.get_worker_pids();
    const others = children().filter(pid => !workers.includes(pid));
    assertEqual(others.length, 1, `children ${children()}, workers ${workers}`);
    return others[0];
}

// Read by workerReport in the worker's copy of this script; the tests change
// it here.
let snapshot = 'initial';

function workerReport() {
    // JS run in a clone of the template: its pid and parent, a value it
    // computes, and what it sees of this script's state.
    let total = 0;
    for (let i = 0; i < 1000; i++)
        total += i;
    const stat = new TextDecoder().decode(GLib.file_get_contents('/proc/self/stat')[1]);
    const ppid = parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return new GLib.Variant('(iiis)', [ownPid(), ppid, total, snapshot]);
}

function callReport(pool) {
    const [pid, ppid, total, seen] = assertValue(callSync(pool, null));
    assertEqual(ppid, OWN_PID, 'the worker is a child of this process');
    assertEqual(total, 499500);
    return [pid, seen];
}

function countedPool() {
    const pool = makePool(workerReport);
    const spawned = [];
    const exited = [];
    const counts = [];
    pool.connect('worker-spawned', (_pool, pid) => spawned.push(pid));
    pool.connect('worker-exited', (_pool, pid, status) => exited.push([pid, status]));
    pool.connect('notify::n-workers', p => counts.push(p.n_workers));
    return {pool, spawned, exited, counts};
}

test('fork-server: default TRUE, settable while no worker runs, notify', () => {
    const pool = makePool(workerReport);
    assertEqual(pool.fork_server, true);
    assertEqual(pool.get_fork_server(), true);
    const notified = [];
    pool.connect('notify::fork-server', p => notified.push(p.fork_server));
    pool.fork_server = false;
    assertEqual(pool.fork_server, false);
    assertEqual(pool.get_fork_server(), false);
    pool.fork_server = false;   // unchanged: explicit notify stays quiet
    pool.set_fork_server(true);
    assertEqual(pool.fork_server, true);
    pool['fork-server'] = false;
    assertEqual(pool['fork-server'], false);
    assertEqual(notified, [false, true, false]);
    const other = new Dc.DetachedCode({fork_server: false});
    cleanups.push(() => other.shutdown());
    assertEqual(other.fork_server, false);
});

test('fork-server: the template is invisible; workers run JS and are our children', () => {
    waitChildren([], 'the children of earlier tests to be reaped');
    const {pool, spawned, exited, counts} = countedPool();
    pool.min_workers = 2;
    pool.max_workers = 4;
    assert(pool.start());

    const pids = sorted(pool.get_worker_pids());
    assertEqual(pids.length, 2);
    assertEqual(pool.n_workers, 2);
    assertEqual(sorted(spawned), pids, 'worker-spawned once per worker');
    assertEqual(exited, []);
    const kids = children();
    assertEqual(kids.length, 3, `two workers and the template: ${kids}`);
    for (const pid of pids)
        assertEqual(procStat(pid)[1], OWN_PID, `worker ${pid}: not our child`);
    const template = templateOf(pool);
    assert(!pids.includes(template) && !spawned.includes(template), 'the template counts as a worker');
    assert(procStat(template)[0] !== 'Z', 'the template is alive');
    assertEqual(threadCount(template), 1, 'the template is single-threaded');

    for (let i = 0; i < 4; i++) {
        const [pid, seen] = callReport(pool);
        assert(pids.includes(pid), `call ran in ${pid}, not a worker`);
        assertEqual(seen, 'initial');
    }
    assertEqual(children(), sorted([...pids, template]));

    // restart(): worker-exited for the two old workers, worker-spawned for
    // the new ones, nothing for either template.
    spawned.length = 0;
    pool.restart();
    spinUntil(() => exited.length >= 2 && pool.n_workers === 2,
        'the old workers to leave and two new ones to run');
    spinUntil(() => procStat(template) === null || procStat(template)[1] !== OWN_PID,
        'the old template to be reaped');
    const fresh = sorted(pool.get_worker_pids());
    assertEqual(sorted(exited.map(([pid]) => pid)), pids, 'worker-exited only for the old workers');
    for (const [, status] of exited)
        assertEqual(status, 0, 'the old workers exited with status 0');
    assertEqual(sorted(spawned), fresh, 'worker-spawned only for the new workers');
    const newTemplate = templateOf(pool);
    assert(newTemplate !== template, 'restart() made a new template');
    assertEqual(children(), sorted([...fresh, newTemplate]));
    assert(counts.every(n => n <= 2), `n-workers went ${counts}`);

    pool.shutdown();
    waitChildren([], 'the workers and the template to be reaped');
    spinUntil(() => exited.length === 4, 'worker-exited for the new workers');
    assertEqual(sorted(exited.slice(2).map(([pid]) => pid)), fresh);
    assertEqual(spawned.length, 2);
});

test('fork-server: workers see this process as it was when the template was made', () => {
    snapshot = 'old';
    cleanups.push(() => (snapshot = 'initial'));
    const pool = makePool(workerReport);
    pool.max_worker_calls = 1;
    assert(pool.start());
    snapshot = 'new';
    // The worker made at start(), then one the template clones now.
    const [pid1, seen1] = callReport(pool);
    const [pid2, seen2] = callReport(pool);
    assert(pid1 !== pid2, 'max-worker-calls 1: a fresh worker');
    assertEqual([seen1, seen2], ['old', 'old']);
    // restart() makes a new template from this process as it is now.
    pool.restart();
    const [pid3, seen3] = callReport(pool);
    assertEqual(seen3, 'new');
    snapshot = 'newer';
    const [pid4, seen4] = callReport(pool);
    assertEqual(seen4, 'new', 'a fresh worker of the same template');
    assertEqual(new Set([pid1, pid2, pid3, pid4]).size, 4);
});

test('fork-server FALSE: no template among the children', () => {
    waitChildren([], 'the children of earlier tests to be reaped');
    const {pool, spawned} = countedPool();
    pool.fork_server = false;
    pool.min_workers = 2;
    pool.max_workers = 4;
    // gjs always runs SpiderMonkey helper threads, so forking from it
    // draws a warning (fatal here); expected, it is let through.
    const fatal = GLib.log_set_always_fatal(GLib.LogLevelFlags.LEVEL_CRITICAL);
    try {
        GLib.log_set_always_fatal(fatal & ~GLib.LogLevelFlags.LEVEL_WARNING);
        assert(pool.start());
    } finally {
        GLib.log_set_always_fatal(fatal);
    }
    const pids = sorted(pool.get_worker_pids());
    assertEqual(pids.length, 2);
    assertEqual(sorted(spawned), pids);
    assertEqual(children(), pids, 'no template without fork-server');
    pool.shutdown();
    waitChildren([], 'the workers to be reaped');
});

// ---- progress ----

// Runs in the worker: reports 0 .. n-1, sleeping ms between, then returns n.
function workerProgress(args) {
    const [n, ms] = args.deepUnpack();
    for (let i = 0; i < n; i++) {
        Dc.worker_report_progress(new GLib.Variant('(u)', [i]));
        if (ms)
            GLib.usleep(ms * 1000);
    }
    return new GLib.Variant('(u)', [n]);
}

// The callbacks only record; the test asserts afterwards.
function callProgress(pool, args, cancellable = null, onProgress = null) {
    const record = {values: [], atCallback: -1, outcomes: []};
    pool.call_with_progress_async(args, GLib.PRIORITY_DEFAULT, cancellable,
        (source, value) => {
            record.values.push(value.deepUnpack()[0]);
            if (record.outcomes.length)
                record.afterCallback = true;
            if (onProgress)
                onProgress(record);
        },
        (source, result) => {
            record.atCallback = record.values.length;
            try {
                record.outcomes.push({value: source.call_finish(result)});
            } catch (e) {
                record.outcomes.push({error: e});
            }
        });
    return record;
}

test('progress arrives in order, all before the callback', () => {
    const pool = makePool(workerProgress);
    const record = callProgress(pool, new GLib.Variant('(uu)', [300, 0]));
    spinUntil(() => record.outcomes.length, 'a call with progress');
    assertEqual(assertValue(record.outcomes[0]), [300]);
    assertEqual(record.atCallback, 300);
    assertEqual(record.values, [...Array(300).keys()]);
    // None after.
    callSync(pool, new GLib.Variant('(uu)', [0, 0]));
    assertEqual(record.values.length, 300);
    assert(!record.afterCallback, 'a progress value after the callback');
});

test('cancelling stops progress', () => {
    const pool = makePool(workerProgress);
    const cancellable = new Gio.Cancellable();
    const record = callProgress(pool, new GLib.Variant('(uu)', [100, 20]), cancellable, r => {
        if (r.values.length === 2)
            cancellable.cancel();
    });
    spinUntil(() => record.outcomes.length, 'the cancelled call');
    assertCancelled(record.outcomes[0]);
    assertEqual(record.values, [0, 1]);
    GLib.usleep(200000);
    callSync(pool, new GLib.Variant('(uu)', [0, 0]));
    assertEqual(record.values, [0, 1]);
});

test('a plain call ignores progress', () => {
    const pool = makePool(workerProgress);
    assertEqual(assertValue(callSync(pool, new GLib.Variant('(uu)', [50, 0]))), [50]);
});

test('a progress value the marshaller cannot carry fails the call', () => {
    const pool = makePool(args => {
        Dc.worker_report_progress(new GLib.Variant('(u)', [1]));
        return args;
    });
    pool.marshaller = Dc.Marshaller.FLAT;
    const record = callProgress(pool, new GLib.Variant('(s)', ['x']));
    spinUntil(() => record.outcomes.length, 'the call');
    assertDcError(record.outcomes[0], Dc.DetachedCodeError.MARSHAL);
    assert(record.outcomes[0].error.message.includes('progress'), record.outcomes[0].error.message);
    assertEqual(record.values, []);
});

test('map: results in item order', () => {
    const pool = makePool(workerMap);
    pool.min_workers = 2;
    pool.max_workers = 2;
    for (const chunkSize of [0, 1, 7, 1000]) {
        const items = [...Array(300).keys()].map(i => ['double', i]);
        const outcome = mapSync(pool, mapItems(items), chunkSize);
        assert(!outcome.error, describe(outcome));
        assertEqual(outcome.value.get_type_string(), 'av');
        assertEqual(outcome.value.deepUnpack().map(v => v.deepUnpack()[0]),
            items.map(([, i]) => 2 * i), `chunk size ${chunkSize}`);
    }
    assertEqual(mapSync(pool, mapItems([])).value.deepUnpack(), []);
});

test('map: the lowest failing item wins', () => {
    const pool = makePool(workerMap);
    pool.min_workers = 2;
    pool.max_workers = 2;
    const items = [...Array(40).keys()].map(i => ['double', i]);
    items[7] = ['sleep', 300];
    items[8] = ['fail', 8];
    items[13] = ['fail', 13];
    const outcome = mapSync(pool, mapItems(items), 10);
    assert(outcome.error && outcome.error.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.NOT_FOUND),
        describe(outcome));
    assertEqual(outcome.error.message, 'item 8');
});

test('map: cancel, and bad input', () => {
    const pool = makePool(workerMap);
    assert(pool.start());
    const cancellable = new Gio.Cancellable();
    GLib.timeout_add(GLib.PRIORITY_DEFAULT, 50, () => {
        cancellable.cancel();
        return GLib.SOURCE_REMOVE;
    });
    assertCancelled(mapSync(pool, mapItems(Array(20).fill(['sleep', 200])), 1, cancellable));
    assertEqual(pool.n_queued, 0);

    const outcome = mapSync(pool, new GLib.Variant('(i)', [1]));
    assert(outcome.error && outcome.error.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.INVALID_ARGUMENT),
        describe(outcome));
});

test('Gio._promisify: await call_async and map_async', () => {
    Gio._promisify(Dc.DetachedCode.prototype, 'call_async', 'call_finish');
    Gio._promisify(Dc.DetachedCode.prototype, 'map_async', 'map_finish');
    const pool = makePool(workerMap);
    const outcome = settle((async () => {
        const one = await pool.call_async(new GLib.Variant('(si)', ['double', 21]),
            GLib.PRIORITY_DEFAULT, null);
        const all = await pool.map_async(mapItems([['double', 1], ['double', 2]]), 0,
            GLib.PRIORITY_DEFAULT, null);
        let failure = null;
        try {
            await pool.map_async(mapItems([['double', 1], ['fail', 2]]), 0,
                GLib.PRIORITY_DEFAULT, null);
        } catch (e) {
            failure = e;
        }
        return [one.deepUnpack(), all.deepUnpack().map(v => v.deepUnpack()), failure];
    })(), 'the awaited call and maps');
    assert(!outcome.error, `${outcome.error}`);
    const [one, all, failure] = outcome.value;
    assertEqual(one, [42]);
    assertEqual(all, [[2], [4]]);
    assert(failure && failure.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.NOT_FOUND), `${failure}`);
    assertEqual(failure.message, 'item 2');
    // With a callback, the promisified methods still take it.
    const sink = call(pool, new GLib.Variant('(si)', ['double', 5]));
    spinUntil(() => sink.length === 1, 'a call with a callback');
    assertEqual(assertValue(sink[0]), [10]);
});

// ---- TAP ----

// Arguments, if any, pick the tests whose names contain one of them.
const selected = ARGV.length ? tests.filter(t => ARGV.some(a => t.name.includes(a))) : tests;
print(`1..${selected.length}`);
let failed = 0;
selected.forEach(({name, func}, index) => {
    try {
        func();
        print(`ok ${index + 1} - ${name}`);
    } catch (e) {
        failed++;
        print(`not ok ${index + 1} - ${name}`);
        for (const line of `${e}\n${e.stack ?? ''}`.trimEnd().split('\n'))
            print(`# ${line}`);
    } finally {
        for (const cleanup of cleanups.splice(0).reverse()) {
            try {
                cleanup();
            } catch (e) {
                print(`# cleanup: ${e}`);
            }
        }
    }
});

imports.system.exit(failed ? 1 : 0);
