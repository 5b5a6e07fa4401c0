imports.gi.versions.Gtk = '4.0';
const {Dc, Gio, GLib} = imports.gi;

const N_JOBS = 16;

function slowSquare(args) {  // runs in a worker process
    const [n] = args.deepUnpack();
    if (n === 13) {  // a crash costs this call, nothing else
        const pid = new Gio.Credentials().get_unix_pid();
        GLib.spawn_command_line_sync(`kill -SEGV ${pid}`);
    }
    GLib.usleep(50 * 1000);
    return new GLib.Variant('(i)', [n * n]);
}

// First of all, before GTK starts: the pool's template process is a copy
// of gjs now.
const pool = Dc.DetachedCode.new(slowSquare);
pool.max_workers = 2;
pool.kill_on_cancel = true;
pool.start();

const {Gtk} = imports.gi;
const cancellable = new Gio.Cancellable();
const app = new Gtk.Application({application_id: 'org.example.Squares'});
let finished = 0;

app.connect('activate', () => {
    const progress = new Gtk.ProgressBar();
    const cancel = new Gtk.Button({label: 'Cancel'});
    cancel.connect('clicked', () => cancellable.cancel());
    const box = new Gtk.Box({orientation: Gtk.Orientation.VERTICAL, spacing: 6});
    box.append(progress);
    box.append(cancel);
    new Gtk.ApplicationWindow({application: app, child: box}).present();

    for (let n = 0; n < N_JOBS; n++) {
        pool.call_async(new GLib.Variant('(i)', [n]), GLib.PRIORITY_DEFAULT, cancellable,
            (source, result) => {
                try {
                    source.call_finish(result);
                } catch (e) {
                    if (e.matches(Dc.DetachedCodeError, Dc.DetachedCodeError.WORKER_DIED))
                        print(`A worker died: ${e.message}`);
                }
                progress.fraction = ++finished / N_JOBS;
                if (finished === N_JOBS && GLib.getenv('DC_SNIPPET_QUIT'))  // for the tests
                    app.quit();
            });
    }
});
app.connect('shutdown', () => pool.shutdown());
app.run(null);
