import Dc from 'gi://Dc';
import Gio from 'gi://Gio';
import GLib from 'gi://GLib';
import System from 'system';

const N_JOBS = 16;

function slowSquare(args) {  // runs in a worker process
    const [n] = args.deepUnpack();
    if (n === 13)
        System.breakpoint();  // SIGTRAP: a crash costs this call, nothing else
    GLib.usleep(50 * 1000);
    return new GLib.Variant('(i)', [n * n]);
}

// First of all, before GTK starts: the pool's template process is a copy
// of gjs now.
const pool = Dc.DetachedCode.new(slowSquare);
pool.max_workers = 2;
pool.kill_on_cancel = true;
let workers = 0;  // spawned and not yet reaped
pool.connect('worker-spawned', () => workers++);
pool.connect('worker-exited', () => workers--);  // once reaped
pool.start();

// Only now GTK, which starts threads of its own.
const {default: Gtk} = await import('gi://Gtk?version=4.0');

const cancellable = new Gio.Cancellable();
const app = new Gtk.Application({application_id: 'org.example.Squares'});
let pending = 0;
let finished = 0;

app.connect('activate', () => {
    const progress = new Gtk.ProgressBar();
    const cancel = new Gtk.Button({label: 'Cancel'});
    cancel.connect('clicked', () => cancellable.cancel());
    const box = new Gtk.Box({orientation: Gtk.Orientation.VERTICAL, spacing: 6});
    box.append(progress);
    box.append(cancel);
    new Gtk.ApplicationWindow({application: app, child: box}).present();

    for (let n = 0; n < N_JOBS; n++, pending++) {
        pool.call_async(new GLib.Variant('(i)', [n]), GLib.PRIORITY_DEFAULT, cancellable,
            (source, result) => {
                try {
                    source.call_finish(result);
                } catch (e) {
                    if (e.matches(Dc.DetachedCodeError, Dc.DetachedCodeError.WORKER_DIED))
                        print(`A worker crashed: ${e.message}`);
                }
                pending--;
                progress.fraction = ++finished / N_JOBS;
                if (finished === N_JOBS && GLib.getenv('DC_SNIPPET_QUIT'))  // for the tests
                    app.quit();
            });
    }
});

app.connect('shutdown', () => {
    // Outstanding calls fail with SHUTDOWN and the workers are reaped, both
    // as the main context runs: run it until they are done (the workers for
    // five seconds at most), or the workers outlive us as zombies.
    let late = false;
    pool.shutdown();
    const timeout = GLib.timeout_add(GLib.PRIORITY_DEFAULT, 5000, () => {
        late = true;
        return GLib.SOURCE_REMOVE;
    });
    const context = GLib.MainContext.default();
    while (pending > 0 || (workers > 0 && !late))
        context.iteration(true);
    if (!late)
        GLib.source_remove(timeout);
});

app.run([System.programInvocationName, ...ARGV]);
