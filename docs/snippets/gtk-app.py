import os
import sys
import time

import gi

gi.require_version("Dc", "1.0")
from gi.repository import Dc, Gio, GLib

N_JOBS = 16


def slow_square(args):  # runs in a worker process
    (n,) = args.unpack()
    if n == 13:
        os.abort()  # a crash costs this call, nothing else
    time.sleep(0.05)
    return GLib.Variant("(i)", (n * n,))


# First of all, before GTK starts: the pool's template process is a copy
# of the interpreter now.
pool = Dc.DetachedCode.new(slow_square)
pool.props.max_workers = 2
pool.props.kill_on_cancel = True
workers = 0  # spawned and not yet reaped


def count_workers(change):
    global workers
    workers += change


pool.connect("worker-spawned", lambda pool, pid: count_workers(+1))
pool.connect("worker-exited", lambda pool, pid, status: count_workers(-1))  # once reaped
pool.start()

gi.require_version("Gtk", "4.0")
from gi.repository import Gtk  # noqa: E402

cancellable = Gio.Cancellable()
pending = 0
finished = 0


def on_done(pool, result, progress):
    global pending, finished
    try:
        pool.call_finish(result)
    except GLib.Error as e:
        if e.matches(Dc.DetachedCodeError.quark(), Dc.DetachedCodeError.WORKER_DIED):
            print("A worker crashed:", e.message)
    pending -= 1
    finished += 1
    progress.set_fraction(finished / N_JOBS)
    if finished == N_JOBS and "DC_SNIPPET_QUIT" in os.environ:  # for the tests
        app.quit()


def on_activate(app):
    global pending
    progress = Gtk.ProgressBar()
    cancel = Gtk.Button(label="Cancel")
    cancel.connect("clicked", lambda button: cancellable.cancel())
    box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
    box.append(progress)
    box.append(cancel)
    Gtk.ApplicationWindow(application=app, child=box).present()
    for n in range(N_JOBS):
        pool.call_async(GLib.Variant("(i)", (n,)), GLib.PRIORITY_DEFAULT,
                        cancellable, on_done, progress)
        pending += 1


def on_shutdown(app):
    # Outstanding calls fail with SHUTDOWN and the workers are reaped, both
    # as the main context runs: run it until they are done (the workers for
    # five seconds at most), or the workers outlive us as zombies.
    late = False

    def time_out():
        nonlocal late
        late = True
        return GLib.SOURCE_REMOVE

    pool.shutdown()
    timeout = GLib.timeout_add(5000, time_out)
    context = GLib.MainContext.default()
    while pending > 0 or (workers > 0 and not late):
        context.iteration(True)
    if not late:
        GLib.source_remove(timeout)


app = Gtk.Application(application_id="org.example.Squares")
app.connect("activate", on_activate)
app.connect("shutdown", on_shutdown)
sys.exit(app.run(sys.argv))
