import os
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
pool.start()

gi.require_version("Gtk", "4.0")
from gi.repository import Gtk  # noqa: E402

cancellable = Gio.Cancellable()
finished = 0


def on_done(pool, result, progress):
    global finished
    try:
        pool.call_finish(result)
    except GLib.Error as e:
        if e.matches(Dc.DetachedCodeError.quark(), Dc.DetachedCodeError.WORKER_DIED):
            print("A worker crashed:", e.message)
    finished += 1
    progress.set_fraction(finished / N_JOBS)
    if finished == N_JOBS and "DC_SNIPPET_QUIT" in os.environ:  # for the tests
        app.quit()


def on_activate(app):
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


app = Gtk.Application(application_id="org.example.Squares")
app.connect("activate", on_activate)
app.connect("shutdown", lambda app: pool.shutdown())
app.run(None)
