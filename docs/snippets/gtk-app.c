#include <stdlib.h>

#include <gtk/gtk.h>
#include <detached-code.h>

#define N_JOBS 16

typedef struct
{
  DcDetachedCode *pool;
  GCancellable   *cancellable;
  GtkProgressBar *progress;   /* a reference of our own: calls may outlive the window */
  guint           pending;
  guint           finished;
  guint           workers;    /* spawned and not yet reaped */
} App;

/* Runs in a worker process. */
static GVariant *
slow_square (GVariant *args, gpointer user_data, GError **error)
{
  gint32 n;

  g_variant_get (args, "(i)", &n);
  if (n == 13)
    abort ();                 /* a crash costs this call, nothing else */
  g_usleep (50 * 1000);
  return g_variant_new ("(i)", n * n);
}

/* Runs in the application, on its main context. */
static void
on_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  App *app = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source),
                                                            result, &error);

  if (value == NULL
      && g_error_matches (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED))
    g_print ("A worker crashed: %s\n", error->message);
  app->pending--;
  app->finished++;
  gtk_progress_bar_set_fraction (app->progress, (double) app->finished / N_JOBS);
}

static void
on_activate (GtkApplication *gtk_app, gpointer user_data)
{
  App *app = user_data;
  GtkWidget *window = gtk_application_window_new (gtk_app);
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 6);
  GtkWidget *cancel = gtk_button_new_with_label ("Cancel");
  gint32 n;

  app->progress = g_object_ref (GTK_PROGRESS_BAR (gtk_progress_bar_new ()));
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (app->progress));
  gtk_box_append (GTK_BOX (box), cancel);
  gtk_window_set_child (GTK_WINDOW (window), box);
  g_signal_connect_swapped (cancel, "clicked", G_CALLBACK (g_cancellable_cancel),
                            app->cancellable);
  gtk_window_present (GTK_WINDOW (window));

  for (n = 0; n < N_JOBS; n++, app->pending++)
    dc_detached_code_call_async (app->pool, g_variant_new ("(i)", n), G_PRIORITY_DEFAULT,
                                 app->cancellable, on_done, app);
}

static void
on_worker_spawned (DcDetachedCode *pool, int pid, gpointer user_data)
{
  ((App *) user_data)->workers++;
}

/* Emitted once the worker is reaped. */
static void
on_worker_exited (DcDetachedCode *pool, int pid, int wait_status, gpointer user_data)
{
  ((App *) user_data)->workers--;
}

static void
set_flag (gpointer user_data)
{
  *(gboolean *) user_data = TRUE;
}

static void
on_shutdown (GApplication *gtk_app, gpointer user_data)
{
  App *app = user_data;
  gboolean late = FALSE;
  guint timeout;

  /* Outstanding calls fail with SHUTDOWN and the workers are reaped, both
   * as the main context runs: run it until they are done (the workers for
   * five seconds at most), or the workers outlive us as zombies. */
  dc_detached_code_shutdown (app->pool);
  timeout = g_timeout_add_once (5000, set_flag, &late);
  while (app->pending > 0 || (app->workers > 0 && !late))
    g_main_context_iteration (NULL, TRUE);
  if (!late)
    g_source_remove (timeout);
  g_clear_object (&app->progress);
}

int
main (int argc, char *argv[])
{
  App app = { NULL, g_cancellable_new (), NULL, 0, 0, 0 };
  g_autoptr(GtkApplication) gtk_app = NULL;
  g_autoptr(GError) error = NULL;
  int status;

  /* First of all: the pool's template process is a copy of the program now. */
  app.pool = dc_detached_code_new (slow_square, NULL, NULL);
  g_object_set (app.pool, "max-workers", 2, "kill-on-cancel", TRUE, NULL);
  g_signal_connect (app.pool, "worker-spawned", G_CALLBACK (on_worker_spawned), &app);
  g_signal_connect (app.pool, "worker-exited", G_CALLBACK (on_worker_exited), &app);
  if (!dc_detached_code_start (app.pool, &error))
    g_error ("%s", error->message);

  gtk_app = gtk_application_new ("org.example.Squares", G_APPLICATION_DEFAULT_FLAGS);
  g_signal_connect (gtk_app, "activate", G_CALLBACK (on_activate), &app);
  g_signal_connect (gtk_app, "shutdown", G_CALLBACK (on_shutdown), &app);
  status = g_application_run (G_APPLICATION (gtk_app), argc, argv);

  g_object_unref (app.pool);
  g_object_unref (app.cancellable);
  return status;
}
