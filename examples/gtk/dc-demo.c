/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* A GTK 4 Mandelbrot viewer whose tiles are computed in a DcDetachedCode
 * pool while the window stays responsive:
 *
 *   dc-demo [--self-test=SCREENSHOT.png | --self-test-close]
 *
 * Render sends one call per tile; the progress bar counts the tiles that
 * came back; Cancel cancels every call (running workers are killed); the
 * worker count sets max-workers.  One tile crashes its worker on purpose:
 * it is drawn as failed and the rest of the image completes.
 *
 * --self-test renders, cancels a render midway, renders again, measures
 * the frame rate while the workers compute and while a render is cancelled,
 * saves a screenshot of the window, and exits with the outcome.
 * --self-test-close starts a render and closes the window midway, as a
 * user may: the application must end cleanly, its workers reaped.
 */

#include "config.h"

#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <glib/gi18n.h>
#include <gtk/gtk.h>

#include <detached-code.h>

#define APP_ID        "org.example.DetachedCodeDemo"
#define RESOURCE_PATH "/org/example/DetachedCodeDemo/"

#define IMAGE_WIDTH  640
#define IMAGE_HEIGHT 480
#define TILE_SIZE    32
#define N_COLUMNS    (IMAGE_WIDTH / TILE_SIZE)
#define N_ROWS       (IMAGE_HEIGHT / TILE_SIZE)
#define N_TILES      (N_COLUMNS * N_ROWS)
/* The tile whose worker calls abort(), left of the main cardioid. */
#define CRASH_TILE   (5 * N_COLUMNS + 6)

#define VIEW_CENTER_X (-0.62)
#define VIEW_CENTER_Y 0.0
#define VIEW_SCALE    (2.9 / IMAGE_WIDTH)   /* plane units per pixel */
#define MAX_ITERATIONS 1000
#define SAMPLES        2                    /* SAMPLES² per pixel */

/* What the self-test asks of the frame clock, and how long it waits for
 * anything at all: generous, for a loaded two-core machine. */
#define MIN_FPS           5.0
#define SELF_TEST_TIMEOUT_S 240

/* How long the application waits, as it ends, for its workers to be
 * reaped. */
#define REAP_TIMEOUT_MS 10000

/* ---- in the worker ---- */

/* Runs once in each worker, before its first call; what it changes stays
 * in the worker.  The workers yield the CPU to the application, so the
 * window keeps drawing however many of them compute. */
static void
worker_init (gpointer user_data)
{
  struct rlimit no_core = { 0, 0 };

  setpriority (PRIO_PROCESS, 0, 10);
  /* The crash tile aborts on purpose: no core file for it. */
  setrlimit (RLIMIT_CORE, &no_core);
}

static guint32
colour_for (double mu)
{
  double t = mu * 0.045;
  guint r = (guint) (127.5 * (1.0 - cos (t * 2.0 * G_PI)));
  guint g = (guint) (127.5 * (1.0 - cos (t * 2.0 * G_PI + 1.2)));
  guint b = (guint) (127.5 * (1.0 - cos (t * 2.0 * G_PI + 2.3)));

  return (r << 16) | (g << 8) | b;
}

/* Runs in a worker process.  @args is (dddiiiiub): centre x and y, plane
 * units per pixel, the tile's x, y, width and height in pixels, the
 * iteration limit, and whether to crash.  Returns (ay): the tile's pixels
 * as cairo ARGB32 words, row after row. */
static GVariant *
render_tile (GVariant  *args,
             gpointer   user_data,
             GError   **error)
{
  double cx, cy, scale;
  gint32 x0, y0, width, height;
  guint32 max_iterations;
  gboolean crash;
  guint32 *pixels;
  int x, y;

  if (!g_variant_is_of_type (args, G_VARIANT_TYPE ("(dddiiiiub)")))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "expected (dddiiiiub), got %s", g_variant_get_type_string (args));
      return NULL;
    }
  g_variant_get (args, "(dddiiiiub)", &cx, &cy, &scale, &x0, &y0, &width, &height,
                 &max_iterations, &crash);
  if (width <= 0 || height <= 0 || width > 1024 || height > 1024)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "a %d×%d tile is out of range", width, height);
      return NULL;
    }

  /* On purpose: the pool must lose this worker and this call only. */
  if (crash)
    abort ();

  pixels = g_new (guint32, (gsize) width * height);
  for (y = 0; y < height; y++)
    for (x = 0; x < width; x++)
      {
        guint r = 0, g = 0, b = 0;
        int sx, sy;

        for (sy = 0; sy < SAMPLES; sy++)
          for (sx = 0; sx < SAMPLES; sx++)
            {
              double re = cx + (x0 + x + (sx + 0.5) / SAMPLES - IMAGE_WIDTH / 2.0) * scale;
              double im = cy + (y0 + y + (sy + 0.5) / SAMPLES - IMAGE_HEIGHT / 2.0) * scale;
              double zr = 0, zi = 0, zr2 = 0, zi2 = 0;
              guint32 n = 0;

              while (n < max_iterations && zr2 + zi2 <= 256.0)
                {
                  zi = 2.0 * zr * zi + im;
                  zr = zr2 - zi2 + re;
                  zr2 = zr * zr;
                  zi2 = zi * zi;
                  n++;
                }
              if (n < max_iterations)
                {
                  double mu = n + 1 - log (log (sqrt (zr2 + zi2))) / G_LN2;
                  guint32 c = colour_for (mu);

                  r += (c >> 16) & 0xff;
                  g += (c >> 8) & 0xff;
                  b += c & 0xff;
                }
            }
        r /= SAMPLES * SAMPLES;
        g /= SAMPLES * SAMPLES;
        b /= SAMPLES * SAMPLES;
        pixels[y * width + x] = 0xff000000u | (r << 16) | (g << 8) | b;
      }

  return g_variant_new ("(@ay)",
                        g_variant_new_from_data (G_VARIANT_TYPE_BYTESTRING, pixels,
                                                 sizeof (guint32) * width * height,
                                                 TRUE, g_free, pixels));
}

/* ---- in the application ---- */

typedef enum
{
  TILE_EMPTY,
  TILE_PENDING,
  TILE_DONE,
  TILE_FAILED,
  TILE_CANCELLED,
} TileState;

/* Frames counted by the frame clock over one stretch of the self-test. */
typedef struct
{
  gboolean active;
  guint    frames;
  gint64   first_us;
  gint64   last_us;
  gint64   longest_gap_us;
} FpsMeter;

typedef enum
{
  SELF_TEST_FIRST_RENDER,
  SELF_TEST_CANCELLED_RENDER,
  SELF_TEST_AFTER_CANCEL,
  SELF_TEST_LAST_RENDER,
  SELF_TEST_SCREENSHOT,
  SELF_TEST_DONE,
} SelfTestPhase;

typedef struct
{
  DcDetachedCode  *pool;   /* owned by main() */
  guint            n_processes;    /* workers spawned and not yet reaped */

  /* The window's widgets; NULL once it is destroyed. */
  GtkWindow       *window;
  GtkWidget       *canvas;
  GtkProgressBar  *progress;
  GtkSpinner      *spinner;
  GtkLabel        *status;
  GtkWidget       *render_button;
  GtkWidget       *cancel_button;
  GtkSpinButton   *workers_spin;

  cairo_surface_t *image;
  TileState        tiles[N_TILES];
  GCancellable    *cancellable;    /* of the render in progress, or NULL */
  guint            pending;        /* calls whose callback has not run */
  guint            n_done, n_failed, n_cancelled;
  guint            most_workers;   /* n-workers seen during the render */
  gint64           started_us;
  char            *failure;        /* why the last failed tile failed */
  gboolean         failure_was_crash;
  gboolean         bad_result;

  /* --self-test or --self-test-close */
  gboolean         self_test;
  char            *self_test_path;
  gboolean         self_test_close;
  SelfTestPhase    phase;
  gboolean         self_test_failed;
  gboolean         self_test_started;
  guint            self_test_timeout_id;  /* self_test_timed_out() */
  guint            self_test_next_id;     /* self_test_after_cancel() or _screenshot() */
  FpsMeter         render_fps;
  FpsMeter         cancel_fps;
  gint64           cancelled_us;
  gint64           cancel_took_us;
} Demo;

typedef struct
{
  Demo  *demo;
  guint  index;
} TileCall;

static void start_render (Demo *demo);
static void self_test_step (Demo *demo);
static void self_test_fail (Demo       *demo,
                            const char *format,
                            ...) G_GNUC_PRINTF (2, 3);

static void
update_progress (Demo *demo)
{
  guint finished = demo->n_done + demo->n_failed + demo->n_cancelled;
  g_autofree char *text = NULL;

  if (demo->progress == NULL)
    return;

  text = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "%u of %u tile", "%u of %u tiles", N_TILES),
                          finished, N_TILES);
  gtk_progress_bar_set_fraction (demo->progress, (double) finished / N_TILES);
  gtk_progress_bar_set_text (demo->progress, text);
}

static void
update_status (Demo *demo)
{
  g_autoptr(GString) text = g_string_new (NULL);
  g_autofree GPid *pids = NULL;
  guint n_pids = 0, i;

  if (demo->status == NULL)
    return;

  if (demo->pending > 0)
    {
      g_string_append_printf (text, g_dngettext (GETTEXT_PACKAGE,
                                                 "Rendering: %u call outstanding.",
                                                 "Rendering: %u calls outstanding.",
                                                 demo->pending),
                              demo->pending);
      g_string_append_c (text, ' ');
    }
  else if (demo->n_done + demo->n_failed + demo->n_cancelled > 0)
    {
      g_string_append_printf (text,
                              g_dngettext (GETTEXT_PACKAGE,
                                           /* TRANSLATORS: the plural follows the
                                            * first number, the tiles done. */
                                           "%u tile done, %u failed, %u cancelled in %.1f s.",
                                           "%u tiles done, %u failed, %u cancelled in %.1f s.",
                                           demo->n_done),
                              demo->n_done, demo->n_failed, demo->n_cancelled,
                              (g_get_monotonic_time () - demo->started_us) / 1e6);
      g_string_append_c (text, ' ');
    }
  if (demo->failure != NULL)
    {
      /* TRANSLATORS: %s is why the tile failed, such as a worker's crash. */
      g_string_append_printf (text, _("Failed tile: %s."), demo->failure);
      g_string_append_c (text, ' ');
    }

  /* The pids are what `gdb -p` needs to debug a worker. */
  pids = dc_detached_code_get_worker_pids (demo->pool, &n_pids);
  if (n_pids == 0)
    g_string_append (text, _("Worker pids: none running"));
  else
    g_string_append (text, g_dngettext (GETTEXT_PACKAGE, "Worker pid:", "Worker pids:", n_pids));
  for (i = 0; i < n_pids; i++)
    g_string_append_printf (text, " %d", (int) pids[i]);

  gtk_label_set_text (demo->status, text->str);
}

static void
set_rendering (Demo     *demo,
               gboolean  rendering)
{
  if (demo->window == NULL)
    return;
  gtk_widget_set_sensitive (demo->render_button, !rendering);
  gtk_widget_set_sensitive (demo->cancel_button, rendering);
  gtk_spinner_set_spinning (demo->spinner, rendering);
}

static void
fps_meter_begin (FpsMeter *meter)
{
  memset (meter, 0, sizeof *meter);
  meter->active = TRUE;
}

static double
fps_meter_rate (const FpsMeter *meter)
{
  if (meter->frames < 2 || meter->last_us <= meter->first_us)
    return 0.0;
  return (meter->frames - 1) * 1e6 / (meter->last_us - meter->first_us);
}

/* The callback of one tile, in the parent, on the main context. */
static void
on_tile_done (GObject      *source,
              GAsyncResult *result,
              gpointer      user_data)
{
  g_autofree TileCall *call = user_data;
  Demo *demo = call->demo;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = NULL;
  guint column = call->index % N_COLUMNS;
  guint row = call->index / N_COLUMNS;

  value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), result, &error);
  demo->pending--;
  demo->most_workers = MAX (demo->most_workers, dc_detached_code_get_n_workers (demo->pool));

  if (value != NULL)
    {
      g_autoptr(GVariant) bytes = NULL;
      const guint8 *data;
      gsize size;
      guint y;

      /* What a worker sends is checked like any untrusted input. */
      if (!g_variant_is_of_type (value, G_VARIANT_TYPE ("(ay)")))
        {
          demo->bad_result = TRUE;
          demo->tiles[call->index] = TILE_FAILED;
          demo->n_failed++;
          goto out;
        }
      bytes = g_variant_get_child_value (value, 0);
      data = g_variant_get_fixed_array (bytes, &size, 1);
      if (size != (gsize) TILE_SIZE * TILE_SIZE * 4)
        {
          demo->bad_result = TRUE;
          demo->tiles[call->index] = TILE_FAILED;
          demo->n_failed++;
          goto out;
        }

      cairo_surface_flush (demo->image);
      for (y = 0; y < TILE_SIZE; y++)
        memcpy (cairo_image_surface_get_data (demo->image)
                  + (row * TILE_SIZE + y) * cairo_image_surface_get_stride (demo->image)
                  + column * TILE_SIZE * 4,
                data + y * TILE_SIZE * 4, TILE_SIZE * 4);
      cairo_surface_mark_dirty (demo->image);
      demo->tiles[call->index] = TILE_DONE;
      demo->n_done++;
    }
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    {
      demo->tiles[call->index] = TILE_CANCELLED;
      demo->n_cancelled++;
    }
  else
    {
      /* A crash in a worker costs this call, nothing else. */
      demo->tiles[call->index] = TILE_FAILED;
      demo->n_failed++;
      g_free (demo->failure);
      demo->failure = g_strdup (error->message);
      demo->failure_was_crash = g_error_matches (error, DC_DETACHED_CODE_ERROR,
                                                 DC_DETACHED_CODE_ERROR_WORKER_DIED);
    }

out:
  update_progress (demo);
  if (demo->canvas != NULL)
    gtk_widget_queue_draw (demo->canvas);

  if (demo->pending == 0)
    {
      g_clear_object (&demo->cancellable);
      set_rendering (demo, FALSE);
      update_status (demo);
      /* Not once the window is gone: the self-test ended with it. */
      if (demo->self_test && demo->window != NULL)
        self_test_step (demo);
    }
  else if (demo->self_test_close && demo->window != NULL && demo->n_done >= N_TILES / 4)
    {
      /* Close the window midway, as a user may. */
      g_print ("self-test: closing the window with %u of %u tiles done\n", demo->n_done, N_TILES);
      demo->phase = SELF_TEST_DONE;
      gtk_window_close (demo->window);
    }
  else if (demo->self_test && demo->window != NULL
           && demo->phase == SELF_TEST_CANCELLED_RENDER
           && demo->cancelled_us == 0 && demo->n_done >= N_TILES / 4)
    {
      /* Cancel midway, as a user would. */
      demo->cancelled_us = g_get_monotonic_time ();
      fps_meter_begin (&demo->cancel_fps);
      g_print ("self-test: cancelling with %u of %u tiles done\n", demo->n_done, N_TILES);
      g_signal_emit_by_name (demo->cancel_button, "clicked");
    }
}

static void
start_render (Demo *demo)
{
  guint i;

  g_return_if_fail (demo->pending == 0);

  demo->cancellable = g_cancellable_new ();
  demo->n_done = demo->n_failed = demo->n_cancelled = 0;
  demo->most_workers = 0;
  demo->bad_result = FALSE;
  demo->failure_was_crash = FALSE;
  g_clear_pointer (&demo->failure, g_free);
  demo->started_us = g_get_monotonic_time ();

  for (i = 0; i < N_TILES; i++)
    {
      TileCall *call = g_new0 (TileCall, 1);
      double dx = (i % N_COLUMNS) + 0.5 - N_COLUMNS / 2.0;
      double dy = (i / N_COLUMNS) + 0.5 - N_ROWS / 2.0;

      call->demo = demo;
      call->index = i;
      demo->tiles[i] = TILE_PENDING;
      demo->pending++;
      /* Lower priorities run first: the middle of the image comes first. */
      dc_detached_code_call_async (demo->pool,
                                   g_variant_new ("(dddiiiiub)", VIEW_CENTER_X, VIEW_CENTER_Y,
                                                  VIEW_SCALE,
                                                  (gint32) ((i % N_COLUMNS) * TILE_SIZE),
                                                  (gint32) ((i / N_COLUMNS) * TILE_SIZE),
                                                  (gint32) TILE_SIZE, (gint32) TILE_SIZE,
                                                  (guint32) MAX_ITERATIONS,
                                                  (gboolean) (i == CRASH_TILE)),
                                   G_PRIORITY_DEFAULT + (int) sqrt (dx * dx + dy * dy),
                                   demo->cancellable, on_tile_done, call);
    }

  update_progress (demo);
  set_rendering (demo, TRUE);
  update_status (demo);
  if (demo->canvas != NULL)
    gtk_widget_queue_draw (demo->canvas);
}

static void
draw_canvas (GtkDrawingArea *area,
             cairo_t        *cr,
             int             width,
             int             height,
             gpointer        user_data)
{
  Demo *demo = user_data;
  double scale = MIN ((double) width / IMAGE_WIDTH, (double) height / IMAGE_HEIGHT);
  guint i;

  cairo_translate (cr, (width - IMAGE_WIDTH * scale) / 2, (height - IMAGE_HEIGHT * scale) / 2);
  cairo_scale (cr, scale, scale);
  cairo_set_source_surface (cr, demo->image, 0, 0);
  cairo_paint (cr);

  for (i = 0; i < N_TILES; i++)
    {
      double x = (i % N_COLUMNS) * TILE_SIZE;
      double y = (i / N_COLUMNS) * TILE_SIZE;

      switch (demo->tiles[i])
        {
        case TILE_EMPTY:
        case TILE_DONE:
          break;
        case TILE_PENDING:
          cairo_set_source_rgba (cr, 0.2, 0.2, 0.25, 0.85);
          cairo_rectangle (cr, x + 1, y + 1, TILE_SIZE - 2, TILE_SIZE - 2);
          cairo_fill (cr);
          break;
        case TILE_CANCELLED:
          cairo_set_source_rgba (cr, 0.45, 0.45, 0.45, 0.9);
          cairo_rectangle (cr, x + 1, y + 1, TILE_SIZE - 2, TILE_SIZE - 2);
          cairo_fill (cr);
          break;
        case TILE_FAILED:
          cairo_set_source_rgb (cr, 0.75, 0.11, 0.16);
          cairo_rectangle (cr, x, y, TILE_SIZE, TILE_SIZE);
          cairo_fill (cr);
          cairo_set_source_rgb (cr, 1, 1, 1);
          cairo_set_line_width (cr, 3);
          cairo_set_line_cap (cr, CAIRO_LINE_CAP_ROUND);
          cairo_move_to (cr, x + 8, y + 8);
          cairo_line_to (cr, x + TILE_SIZE - 8, y + TILE_SIZE - 8);
          cairo_move_to (cr, x + TILE_SIZE - 8, y + 8);
          cairo_line_to (cr, x + 8, y + TILE_SIZE - 8);
          cairo_stroke (cr);
          break;
        default:
          g_assert_not_reached ();
        }
    }
}

static void
on_render_clicked (GtkButton *button,
                   gpointer   user_data)
{
  start_render (user_data);
}

static void
on_cancel_clicked (GtkButton *button,
                   gpointer   user_data)
{
  Demo *demo = user_data;

  /* Every call of the render shares this cancellable: queued calls never
   * reach a worker, running ones lose their worker (kill-on-cancel), and
   * each callback runs once, with G_IO_ERROR_CANCELLED. */
  if (demo->cancellable != NULL)
    g_cancellable_cancel (demo->cancellable);
}

static void
on_workers_changed (GtkSpinButton *spin,
                    gpointer       user_data)
{
  Demo *demo = user_data;

  dc_detached_code_set_max_workers (demo->pool, (guint) gtk_spin_button_get_value_as_int (spin));
}

static void
on_window_destroy (GtkWidget *window,
                   gpointer   user_data)
{
  Demo *demo = user_data;

  /* Calls still outstanding complete after the window: they must not
   * touch its widgets. */
  if (demo->cancellable != NULL)
    g_cancellable_cancel (demo->cancellable);

  /* The self-test ends with the window, finished or not; none of its
   * steps may run without it. */
  if (demo->self_test && demo->phase != SELF_TEST_DONE)
    {
      self_test_fail (demo, "the window was closed before the self-test finished (phase %d)",
                      demo->phase);
      demo->phase = SELF_TEST_DONE;
    }
  g_clear_handle_id (&demo->self_test_next_id, g_source_remove);
  g_clear_handle_id (&demo->self_test_timeout_id, g_source_remove);

  demo->window = NULL;
  demo->canvas = NULL;
  demo->progress = NULL;
  demo->spinner = NULL;
  demo->status = NULL;
  demo->render_button = NULL;
  demo->cancel_button = NULL;
  demo->workers_spin = NULL;
}

/* ---- --self-test ---- */

static void
self_test_fail (Demo       *demo,
                const char *format,
                ...)
{
  g_autofree char *message = NULL;
  va_list args;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  g_printerr ("self-test: FAIL: %s\n", message);
  demo->self_test_failed = TRUE;
}

static gboolean
on_tick (GtkWidget     *widget,
         GdkFrameClock *clock,
         gpointer       user_data)
{
  Demo *demo = user_data;
  gint64 now = gdk_frame_clock_get_frame_time (clock);
  FpsMeter *meters[] = { &demo->render_fps, &demo->cancel_fps };
  guint i;

  /* The first render starts once the window is on screen. */
  if (!demo->self_test_started)
    {
      demo->self_test_started = TRUE;
      demo->phase = SELF_TEST_FIRST_RENDER;
      fps_meter_begin (&demo->render_fps);
      g_signal_emit_by_name (demo->render_button, "clicked");
    }

  for (i = 0; i < G_N_ELEMENTS (meters); i++)
    {
      FpsMeter *meter = meters[i];

      if (!meter->active)
        continue;
      if (meter->frames == 0)
        meter->first_us = now;
      else
        meter->longest_gap_us = MAX (meter->longest_gap_us, now - meter->last_us);
      meter->last_us = now;
      meter->frames++;
    }

  return G_SOURCE_CONTINUE;
}

static gboolean
self_test_timed_out (gpointer user_data)
{
  Demo *demo = user_data;

  demo->self_test_timeout_id = 0;
  self_test_fail (demo, "nothing finished within %d s (phase %d, %u calls outstanding)",
                  SELF_TEST_TIMEOUT_S, demo->phase, demo->pending);
  g_application_quit (g_application_get_default ());
  return G_SOURCE_REMOVE;
}

static void
check_full_render (Demo       *demo,
                   const char *which)
{
  g_print ("self-test: %s render: %u done, %u failed, %u cancelled in %.2f s, "
           "up to %u workers\n", which, demo->n_done, demo->n_failed, demo->n_cancelled,
           (g_get_monotonic_time () - demo->started_us) / 1e6, demo->most_workers);
  if (demo->n_done != N_TILES - 1 || demo->n_failed != 1
      || demo->tiles[CRASH_TILE] != TILE_FAILED)
    self_test_fail (demo, "%s render: expected %u tiles done and the crash tile failed",
                    which, N_TILES - 1);
  if (!demo->failure_was_crash)
    self_test_fail (demo, "%s render: the crash tile did not fail with WORKER_DIED (%s)",
                    which, demo->failure ? demo->failure : "no error");
  else
    g_print ("self-test: the crash tile failed with: %s\n", demo->failure);
  if (demo->bad_result)
    self_test_fail (demo, "%s render: a worker sent a malformed tile", which);
}

static void
report_fps (Demo           *demo,
            const char     *what,
            const FpsMeter *meter)
{
  double fps = fps_meter_rate (meter);

  g_print ("self-test: frame clock during %s: %u frames in %.2f s = %.1f fps, "
           "longest gap %.0f ms\n", what, meter->frames,
           (meter->last_us - meter->first_us) / 1e6, fps, meter->longest_gap_us / 1e3);
  if (fps < MIN_FPS)
    self_test_fail (demo, "the frame clock ran at %.1f fps during %s (floor %.0f)",
                    fps, what, MIN_FPS);
}

static gboolean
save_screenshot (GtkWidget   *widget,
                 const char  *path,
                 GError     **error)
{
  g_autoptr(GdkPaintable) paintable = gtk_widget_paintable_new (widget);
  g_autoptr(GtkSnapshot) snapshot = gtk_snapshot_new ();
  g_autoptr(GskRenderNode) node = NULL;
  g_autoptr(GdkTexture) texture = NULL;
  int width = gdk_paintable_get_intrinsic_width (paintable);
  int height = gdk_paintable_get_intrinsic_height (paintable);

  gdk_paintable_snapshot (paintable, snapshot, width, height);
  node = gtk_snapshot_free_to_node (g_steal_pointer (&snapshot));
  if (node == NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "the window drew nothing");
      return FALSE;
    }
  texture = gsk_renderer_render_texture (gtk_native_get_renderer (GTK_NATIVE (widget)), node,
                                         &GRAPHENE_RECT_INIT (0, 0, width, height));
  if (!gdk_texture_save_to_png (texture, path))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot write %s", path);
      return FALSE;
    }
  g_print ("self-test: wrote a %d×%d screenshot to %s\n", width, height, path);
  return TRUE;
}

static gboolean
self_test_after_cancel (gpointer user_data)
{
  Demo *demo = user_data;

  demo->self_test_next_id = 0;
  demo->cancel_fps.active = FALSE;
  report_fps (demo, "a cancel", &demo->cancel_fps);

  /* Another worker count, then the full image again. */
  demo->phase = SELF_TEST_LAST_RENDER;
  gtk_spin_button_set_value (demo->workers_spin, 3);
  fps_meter_begin (&demo->render_fps);
  g_signal_emit_by_name (demo->render_button, "clicked");
  return G_SOURCE_REMOVE;
}

static gboolean
self_test_screenshot (gpointer user_data)
{
  Demo *demo = user_data;
  g_autoptr(GError) error = NULL;

  demo->self_test_next_id = 0;
  if (!save_screenshot (GTK_WIDGET (demo->window), demo->self_test_path, &error))
    self_test_fail (demo, "screenshot: %s", error->message);
  demo->phase = SELF_TEST_DONE;
  g_print ("self-test: %s\n", demo->self_test_failed ? "FAILED" : "passed");
  gtk_window_destroy (demo->window);
  return G_SOURCE_REMOVE;
}

/* Runs when a render has finished (every callback has run). */
static void
self_test_step (Demo *demo)
{
  /* The self-test ends with the window. */
  g_return_if_fail (demo->window != NULL);

  switch (demo->phase)
    {
    case SELF_TEST_FIRST_RENDER:
      demo->render_fps.active = FALSE;
      check_full_render (demo, "first");
      report_fps (demo, "a render", &demo->render_fps);
      demo->phase = SELF_TEST_CANCELLED_RENDER;
      g_signal_emit_by_name (demo->render_button, "clicked");
      break;

    case SELF_TEST_CANCELLED_RENDER:
      demo->cancel_took_us = g_get_monotonic_time () - demo->cancelled_us;
      g_print ("self-test: cancelled render: %u done, %u failed, %u cancelled; "
               "the last callback came %.1f ms after Cancel\n", demo->n_done, demo->n_failed,
               demo->n_cancelled, demo->cancel_took_us / 1e3);
      if (demo->cancelled_us == 0 || demo->n_cancelled == 0)
        self_test_fail (demo, "the render finished before it could be cancelled");
      if (demo->n_done + demo->n_failed + demo->n_cancelled != N_TILES)
        self_test_fail (demo, "some tiles of the cancelled render never completed");
      /* Go on measuring the frame clock for a second after Cancel. */
      demo->phase = SELF_TEST_AFTER_CANCEL;
      demo->self_test_next_id = g_timeout_add (MAX (0, 1000 - demo->cancel_took_us / 1000),
                                               self_test_after_cancel, demo);
      break;

    case SELF_TEST_LAST_RENDER:
      demo->render_fps.active = FALSE;
      check_full_render (demo, "last");
      report_fps (demo, "a render after the cancel", &demo->render_fps);
      if (demo->most_workers > 3)
        self_test_fail (demo, "%u workers ran with max-workers 3", demo->most_workers);
      /* Let the last tile reach the screen before the screenshot. */
      demo->phase = SELF_TEST_SCREENSHOT;
      demo->self_test_next_id = g_timeout_add (500, self_test_screenshot, demo);
      break;

    case SELF_TEST_AFTER_CANCEL:
    case SELF_TEST_SCREENSHOT:
    case SELF_TEST_DONE:
    default:
      g_assert_not_reached ();
    }
}

/* ---- the application ---- */

static void
on_activate (GtkApplication *app,
             gpointer        user_data)
{
  Demo *demo = user_data;
  g_autoptr(GtkBuilder) builder = NULL;

  if (demo->window != NULL)
    {
      gtk_window_present (demo->window);
      return;
    }

  builder = gtk_builder_new_from_resource (RESOURCE_PATH "dc-demo.ui");
  demo->window = GTK_WINDOW (gtk_builder_get_object (builder, "window"));
  demo->canvas = GTK_WIDGET (gtk_builder_get_object (builder, "canvas"));
  demo->progress = GTK_PROGRESS_BAR (gtk_builder_get_object (builder, "progress"));
  demo->spinner = GTK_SPINNER (gtk_builder_get_object (builder, "spinner"));
  demo->status = GTK_LABEL (gtk_builder_get_object (builder, "status"));
  demo->render_button = GTK_WIDGET (gtk_builder_get_object (builder, "render_button"));
  demo->cancel_button = GTK_WIDGET (gtk_builder_get_object (builder, "cancel_button"));
  demo->workers_spin = GTK_SPIN_BUTTON (gtk_builder_get_object (builder, "workers_spin"));

  gtk_window_set_application (demo->window, app);
  gtk_drawing_area_set_draw_func (GTK_DRAWING_AREA (demo->canvas), draw_canvas, demo, NULL);
  gtk_spin_button_set_value (demo->workers_spin,
                             dc_detached_code_get_max_workers (demo->pool));
  g_signal_connect (demo->render_button, "clicked", G_CALLBACK (on_render_clicked), demo);
  g_signal_connect (demo->cancel_button, "clicked", G_CALLBACK (on_cancel_clicked), demo);
  g_signal_connect (demo->workers_spin, "value-changed", G_CALLBACK (on_workers_changed), demo);
  g_signal_connect (demo->window, "destroy", G_CALLBACK (on_window_destroy), demo);
  update_status (demo);

  if (demo->self_test)
    {
      gtk_widget_add_tick_callback (GTK_WIDGET (demo->window), on_tick, demo, NULL);
      demo->self_test_timeout_id = g_timeout_add_seconds (SELF_TEST_TIMEOUT_S,
                                                          self_test_timed_out, demo);
      gtk_spin_button_set_value (demo->workers_spin, 2);
    }

  gtk_window_present (demo->window);
}

/* worker-spawned and worker-exited: the second comes once the worker is
 * reaped.  (n-workers counts the workers taking calls: it drops as soon as
 * shutdown() asks them to leave, before they are reaped.) */
static void
on_worker_spawned (DcDetachedCode *pool,
                   int             pid,
                   gpointer        user_data)
{
  Demo *demo = user_data;

  demo->n_processes++;
}

static void
on_worker_exited (DcDetachedCode *pool,
                  int             pid,
                  int             wait_status,
                  gpointer        user_data)
{
  Demo *demo = user_data;

  demo->n_processes--;
}

/* Whether this process has a child, exited or not, that nobody has reaped
 * yet.  WNOWAIT: it only looks. */
static gboolean
has_children (void)
{
  siginfo_t info;

  return waitid (P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0;
}

static void
set_flag (gpointer user_data)
{
  *(gboolean *) user_data = TRUE;
}

static void
on_shutdown (GApplication *app,
             gpointer      user_data)
{
  Demo *demo = user_data;
  gboolean timed_out = FALSE;
  guint timeout_id;
  gint64 started_us;

  /* The pool goes with the application: shutdown() fails whatever is
   * still outstanding with SHUTDOWN, asks the workers to leave (killing
   * the busy ones) and reaps them as the main context runs.  So run it
   * until every callback has run (every TileCall is freed, and none runs
   * after main() returns) and every worker has been reaped: a worker
   * left unreaped when the application exits stays a zombie until
   * whoever inherits it reaps it.  The pool's template process leaves
   * too, and is reaped the same way, but no signal reports it: this
   * program starts no other process, so it waits until it has no child
   * left at all.  Reaping takes milliseconds; the time limit only keeps a
   * stuck process from holding up the exit. */
  started_us = g_get_monotonic_time ();
  dc_detached_code_shutdown (demo->pool);
  timeout_id = g_timeout_add_once (REAP_TIMEOUT_MS, set_flag, &timed_out);
  while (demo->pending > 0
         || ((demo->n_processes > 0 || has_children ()) && !timed_out))
    g_main_context_iteration (NULL, TRUE);
  if (timed_out)
    {
      g_printerr ("Child processes were not reaped within %d ms (%u workers)\n",
                  REAP_TIMEOUT_MS, demo->n_processes);
      if (demo->self_test)
        demo->self_test_failed = TRUE;
    }
  else
    {
      g_source_remove (timeout_id);
      if (demo->self_test)
        g_print ("self-test: every child process was reaped %.1f ms after shutdown()\n",
                 (g_get_monotonic_time () - started_us) / 1e3);
    }
}

static int
on_handle_local_options (GApplication *app,
                         GVariantDict *options,
                         gpointer      user_data)
{
  Demo *demo = user_data;

  g_variant_dict_lookup (options, "self-test", "^ay", &demo->self_test_path);
  g_variant_dict_lookup (options, "self-test-close", "b", &demo->self_test_close);
  if (demo->self_test_path != NULL && demo->self_test_close)
    {
      g_printerr ("--self-test and --self-test-close exclude each other\n");
      return EXIT_FAILURE;
    }
  demo->self_test = demo->self_test_path != NULL || demo->self_test_close;
  return -1;
}

int
main (int   argc,
      char *argv[])
{
  g_autoptr(DcDetachedCode) pool = NULL;
  g_autoptr(GtkApplication) app = NULL;
  g_autoptr(GError) error = NULL;
  Demo demo = { 0 };
  int status;

  /* The demo's strings are in the library's translation domain. */
  setlocale (LC_ALL, "");
  bindtextdomain (GETTEXT_PACKAGE, LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);

  pool = dc_detached_code_new (render_tile, NULL, NULL);
  g_signal_connect (pool, "worker-spawned", G_CALLBACK (on_worker_spawned), &demo);
  g_signal_connect (pool, "worker-exited", G_CALLBACK (on_worker_exited), &demo);
  g_object_set (pool,
                "min-workers", 1,
                "max-workers", CLAMP (g_get_num_processors (), 1, 8),
                /* Cancel kills running workers at once, rather than
                 * letting them finish tiles nobody will draw. */
                "kill-on-cancel", TRUE,
                NULL);
  dc_detached_code_set_worker_init_func (pool, worker_init, NULL, NULL);

  /* Start the pool first, before GTK is initialised and before
   * g_application_run().  start() makes the pool's template process: a
   * single-threaded copy of this program as it is now, from which every
   * worker is forked, however late (when the pool grows, or replaces the
   * worker that crashed or was killed by Cancel).  Once GTK runs, this
   * process has threads (GDBus, dconf, the GTask pool, the renderer's):
   * a fork made then could copy a lock one of them holds, and the worker
   * would hang on it.  The template also stays small, so forking a
   * worker stays cheap however much memory the application uses later. */
  if (!dc_detached_code_start (pool, &error))
    {
      g_printerr (_("Cannot start the worker pool: %s\n"), error->message);
      return EXIT_FAILURE;
    }

  demo.pool = pool;
  demo.image = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, IMAGE_WIDTH, IMAGE_HEIGHT);

  /* Each instance owns its pool; none hands its windows to another. */
  app = gtk_application_new (APP_ID, G_APPLICATION_NON_UNIQUE);
  g_application_add_main_option (G_APPLICATION (app), "self-test", 0, 0, G_OPTION_ARG_FILENAME,
                                 "Render, cancel, render again, measure the frame rate, "
                                 "save a screenshot to FILE and exit", "FILE");
  g_application_add_main_option (G_APPLICATION (app), "self-test-close", 0, 0, G_OPTION_ARG_NONE,
                                 "Render, close the window midway and check that the "
                                 "application ends cleanly", NULL);
  g_signal_connect (app, "handle-local-options", G_CALLBACK (on_handle_local_options), &demo);
  g_signal_connect (app, "activate", G_CALLBACK (on_activate), &demo);
  g_signal_connect (app, "shutdown", G_CALLBACK (on_shutdown), &demo);

  status = g_application_run (G_APPLICATION (app), argc, argv);

  if (demo.self_test && status == EXIT_SUCCESS
      && (demo.self_test_failed || demo.phase != SELF_TEST_DONE))
    status = EXIT_FAILURE;
  if (demo.self_test_close)
    g_print ("self-test: %s\n", status == EXIT_SUCCESS ? "passed" : "FAILED");

  g_clear_object (&demo.cancellable);
  g_clear_pointer (&demo.image, cairo_surface_destroy);
  g_free (demo.failure);
  g_free (demo.self_test_path);
  return status;
}
