/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#define _GNU_SOURCE

#include "bench-common.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WIRE_HEADER_BYTES 16

static double scale = 1.0;
static guint n_thread_warnings;
static gboolean tsv;
static char **filters;
static guint n_met, n_missed, n_failed;
static GMainLoop *loop;

/* The library warns, once per pool, when fork-server FALSE forks a
 * worker from a process with threads.  Here the other thread is GLib's
 * own "gmain" worker, idle, and some programs make a pool per repetition:
 * the warning is counted, not printed a hundred times, and bench_finish()
 * says so. */
static GLogWriterOutput
log_writer (GLogLevelFlags   log_level,
            const GLogField *fields,
            gsize            n_fields,
            gpointer         user_data)
{
  const char *domain = NULL, *message = NULL;
  gsize i;

  for (i = 0; i < n_fields; i++)
    if (fields[i].length < 0 && g_str_equal (fields[i].key, "GLIB_DOMAIN"))
      domain = fields[i].value;
    else if (fields[i].length < 0 && g_str_equal (fields[i].key, "MESSAGE"))
      message = fields[i].value;

  if ((log_level & G_LOG_LEVEL_WARNING) && g_strcmp0 (domain, "DetachedCode") == 0 &&
      message != NULL && g_str_has_prefix (message, "Forking a worker from a process with "))
    {
      n_thread_warnings++;
      return G_LOG_WRITER_HANDLED;
    }
  return g_log_writer_default (log_level, fields, n_fields, user_data);
}

void
bench_init (int          *argc,
            char       ***argv,
            const char   *title)
{
  const char *env = g_getenv ("DC_BENCH_SCALE");
  GPtrArray *words = g_ptr_array_new ();
  int i;

  if (env != NULL && *env != '\0')
    {
      char *end = NULL;
      double value = g_ascii_strtod (env, &end);

      if (end == env || *end != '\0' || !(value > 0) || !isfinite (value))
        {
          g_printerr ("DC_BENCH_SCALE must be a positive number, not “%s”\n", env);
          exit (2);
        }
      scale = value;
    }

  for (i = 1; i < *argc; i++)
    {
      const char *arg = (*argv)[i];

      if (g_str_equal (arg, "--tsv"))
        tsv = TRUE;
      else if (g_str_equal (arg, "--help") || g_str_equal (arg, "-h"))
        {
          g_print ("usage: %s [--tsv] [CASE-WORD...]\n"
                   "  DC_BENCH_SCALE=F multiplies every iteration count by F\n"
                   "  DC_BENCH_ROUNDS=N runs N alternating rounds where there are rounds\n",
                   (*argv)[0]);
          exit (0);
        }
      else
        g_ptr_array_add (words, g_strdup (arg));
    }
  g_ptr_array_add (words, NULL);
  filters = (char **) g_ptr_array_free (words, FALSE);
  if (filters[0] == NULL)
    g_clear_pointer (&filters, g_strfreev);

  /* A reader piping the table (meson, peers.sh) should see rows as they
   * are made, not all at exit. */
  setvbuf (stdout, NULL, _IOLBF, 0);

  loop = g_main_loop_new (NULL, FALSE);
  g_log_set_writer_func (log_writer, NULL, NULL);

  g_print ("# %s\n# scale %g (DC_BENCH_SCALE), %ld CPUs online, GLib %u.%u.%u, "
           "library %s\n",
           title, scale, sysconf (_SC_NPROCESSORS_ONLN),
           glib_major_version, glib_minor_version, glib_micro_version, DC_VERSION_S);
}

double
bench_scale (void)
{
  return scale;
}

guint
bench_count (guint base,
             guint min)
{
  double n = ceil (base * scale);

  return n < min ? min : n > G_MAXUINT ? G_MAXUINT : (guint) n;
}

guint
bench_rounds (guint fallback)
{
  const char *env = g_getenv ("DC_BENCH_ROUNDS");
  guint64 value;

  if (env != NULL && g_ascii_string_to_unsigned (env, 10, 1, 100, &value, NULL))
    return (guint) value;
  return fallback;
}

gboolean
bench_selected (const char *key)
{
  char **f;

  if (filters == NULL)
    return TRUE;
  for (f = filters; *f != NULL; f++)
    if (strstr (key, *f) != NULL)
      return TRUE;
  return FALSE;
}

gint64
bench_now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (gint64) ts.tv_sec * G_GINT64_CONSTANT (1000000000) + ts.tv_nsec;
}

double
bench_self_cpu_us (void)
{
  struct rusage ru;

  getrusage (RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

double
bench_pid_cpu_us (pid_t pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/stat", (int) pid);
  g_autofree char *contents = NULL;
  const char *p;
  unsigned long utime, stime;
  int field;

  if (!g_file_get_contents (path, &contents, NULL, NULL))
    return -1;
  /* The command name may hold spaces and parentheses: fields count from
   * the last ')'. */
  p = strrchr (contents, ')');
  if (p == NULL)
    return -1;
  p++;
  for (field = 2; field < 14 && p != NULL; field++)
    p = strchr (p + 1, ' ');
  if (p == NULL || sscanf (p, " %lu %lu", &utime, &stime) != 2)
    return -1;
  return (double) (utime + stime) * 1e6 / sysconf (_SC_CLK_TCK);
}

int
bench_compare_double (gconstpointer a,
                      gconstpointer b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y ? 1 : 0;
}

double
bench_quantile (double *values,
                gsize   n,
                double  q)
{
  gsize i;

  if (n == 0)
    return NAN;
  qsort (values, n, sizeof *values, (int (*)(const void *, const void *)) bench_compare_double);
  i = (gsize) ceil (q * n);
  i = i == 0 ? 0 : i - 1;
  return values[MIN (i, n - 1)];
}

/* ---- the table ---- */

void
bench_table_begin (const char *heading)
{
  g_print ("\n## %s\n", heading);
  g_print ("%-44s %14s %14s %-9s %8s  %s\n",
           "workload", "library", "baseline", "unit", "ratio", "target");
}

static void
format_number (char   *buf,
               gsize   size,
               double  v)
{
  if (isnan (v) || v <= 0)
    g_strlcpy (buf, "-", size);
  else if (v >= 100000)
    g_snprintf (buf, size, "%.0f", v);
  else if (v >= 100)
    g_snprintf (buf, size, "%.1f", v);
  else if (v >= 1)
    g_snprintf (buf, size, "%.2f", v);
  else
    g_snprintf (buf, size, "%.3f", v);
}

void
bench_table_row (const char     *key,
                 const char     *label,
                 double          library,
                 double          baseline,
                 const char     *unit,
                 BenchTargetKind kind,
                 double          target)
{
  char lib_s[32], base_s[32], ratio_s[32], target_s[64];
  double ratio = baseline > 0 && library > 0 ? library / baseline : NAN;
  gboolean met = FALSE;

  format_number (lib_s, sizeof lib_s, library);
  format_number (base_s, sizeof base_s, baseline);
  if (isnan (ratio))
    g_strlcpy (ratio_s, "-", sizeof ratio_s);
  else if (ratio < 0.01)
    g_snprintf (ratio_s, sizeof ratio_s, "%.2gx", ratio);
  else if (ratio < 10)
    g_snprintf (ratio_s, sizeof ratio_s, "%.3fx", ratio);
  else
    g_snprintf (ratio_s, sizeof ratio_s, "%.1fx", ratio);

  switch (kind)
    {
    case BENCH_RATIO_AT_MOST:
      met = !isnan (ratio) && ratio <= target;
      g_snprintf (target_s, sizeof target_s, "ratio <= %.2f  %s", target, met ? "met" : "MISSED");
      break;
    case BENCH_RATIO_AT_LEAST:
      met = !isnan (ratio) && ratio >= target;
      g_snprintf (target_s, sizeof target_s, "ratio >= %.2f  %s", target, met ? "met" : "MISSED");
      break;
    case BENCH_VALUE_AT_MOST:
      met = library > 0 && library <= target;
      g_snprintf (target_s, sizeof target_s, "<= %g %s  %s", target, unit, met ? "met" : "MISSED");
      break;
    case BENCH_VALUE_AT_LEAST:
      met = library >= target;
      g_snprintf (target_s, sizeof target_s, ">= %g %s  %s", target, unit, met ? "met" : "MISSED");
      break;
    case BENCH_NO_TARGET:
    default:
      target_s[0] = '\0';
      break;
    }
  if (kind != BENCH_NO_TARGET)
    {
      if (met)
        n_met++;
      else
        n_missed++;
    }

  g_print ("%-44s %14s %14s %-9s %8s  %s\n", label, lib_s, base_s, unit, ratio_s, target_s);
  if (tsv)
    g_print ("@tsv\t%s\t%.6g\t%.6g\n", key, library, baseline);
}

void
bench_table_note (const char *format,
                  ...)
{
  g_autofree char *text = NULL;
  va_list args;

  va_start (args, format);
  text = g_strdup_vprintf (format, args);
  va_end (args);
  g_print ("  note: %s\n", text);
}

void
bench_fail (const char *format,
            ...)
{
  g_autofree char *text = NULL;
  va_list args;

  va_start (args, format);
  text = g_strdup_vprintf (format, args);
  va_end (args);
  n_failed++;
  g_print ("  LIBRARY FAILURE: %s\n", text);
}

int
bench_finish (void)
{
  if (n_thread_warnings > 0)
    g_print ("\n# not shown: %u of the library's warnings about forking a worker from a "
             "process with threads (fork-server FALSE; here GLib's idle \"gmain\" thread)\n",
             n_thread_warnings);
  g_print ("\n# targets: %u met, %u missed; library failures: %u\n", n_met, n_missed, n_failed);
  g_clear_pointer (&loop, g_main_loop_unref);
  g_clear_pointer (&filters, g_strfreev);
  return n_failed > 0 ? 1 : 0;
}

/* ---- bare peers ---- */

gboolean
bench_write_full (int         fd,
                  const void *buf,
                  gsize       len)
{
  const guint8 *p = buf;

  while (len > 0)
    {
      ssize_t n = write (fd, p, len);

      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return FALSE;
      p += n;
      len -= (gsize) n;
    }
  return TRUE;
}

gboolean
bench_read_full (int   fd,
                 void *buf,
                 gsize len)
{
  guint8 *p = buf;

  while (len > 0)
    {
      ssize_t n = read (fd, p, len);

      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return FALSE;
      p += n;
      len -= (gsize) n;
    }
  return TRUE;
}

BenchPeer
bench_peer_spawn (BenchPeerFunc func,
                  gpointer      data)
{
  BenchPeer peer = { -1, -1 };
  int sv[2];
  pid_t pid;

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    g_error ("socketpair: %s", g_strerror (errno));

  pid = fork ();
  if (pid < 0)
    g_error ("fork: %s", g_strerror (errno));
  if (pid == 0)
    {
      /* Holding a pool's parent-side channel would hide that worker's
       * end of stream from it. */
      if (sv[1] > 3)
        close_range (3, sv[1] - 1, 0);
      close_range (sv[1] + 1, ~0U, 0);
      func (sv[1], data);
      _exit (0);
    }

  close (sv[1]);
  peer.pid = pid;
  peer.fd = sv[0];
  return peer;
}

void
bench_peer_finish (BenchPeer *peer)
{
  int status;

  if (peer->fd >= 0)
    close (peer->fd);
  peer->fd = -1;
  if (peer->pid > 0)
    while (waitpid (peer->pid, &status, 0) < 0 && errno == EINTR)
      ;
  peer->pid = -1;
}

void
bench_reply_peer (int      fd,
                  gpointer data)
{
  BenchFrames *frames = data;
  guint8 *buf = calloc (1, MAX (frames->call, frames->reply));

  while (bench_read_full (fd, buf, frames->call))
    if (!bench_write_full (fd, buf, frames->reply))
      break;
  free (buf);
}

/* ---- pools ---- */

GVariant *
bench_echo_code (GVariant  *args,
                 gpointer   user_data,
                 GError   **error)
{
  return g_variant_ref (args);
}

typedef struct
{
  DcDetachedCode *pool;
  GVariant       *args;
  GVariant       *last;
  guint           left;
  gboolean        failed;
} Sequence;

static void
sequence_cb (GObject      *source,
             GAsyncResult *result,
             gpointer      data)
{
  Sequence *seq = data;
  g_autoptr(GError) error = NULL;
  GVariant *value = dc_detached_code_call_finish (seq->pool, result, &error);

  if (value == NULL)
    {
      bench_fail ("call failed: %s", error->message);
      seq->failed = TRUE;
      bench_loop_quit ();
      return;
    }
  g_clear_pointer (&seq->last, g_variant_unref);
  seq->last = value;
  if (--seq->left == 0)
    {
      bench_loop_quit ();
      return;
    }
  dc_detached_code_call_async (seq->pool, seq->args, G_PRIORITY_DEFAULT, NULL, sequence_cb, seq);
}

/* rchar and wchar count the bytes read() and write() moved (not those of
 * recv()/send() and friends); a worker touches nothing but its channel
 * while it serves. */
static gboolean
workers_io (DcDetachedCode *pool,
            guint64        *rchar,
            guint64        *wchar)
{
  guint n_pids = 0, i;
  g_autofree GPid *pids = dc_detached_code_get_worker_pids (pool, &n_pids);

  *rchar = *wchar = 0;
  for (i = 0; i < n_pids; i++)
    {
      g_autofree char *path = g_strdup_printf ("/proc/%d/io", (int) pids[i]);
      g_autofree char *contents = NULL;
      const char *r, *w;

      if (!g_file_get_contents (path, &contents, NULL, NULL) ||
          (r = strstr (contents, "rchar: ")) == NULL ||
          (w = strstr (contents, "wchar: ")) == NULL)
        return FALSE;
      *rchar += g_ascii_strtoull (r + 7, NULL, 10);
      *wchar += g_ascii_strtoull (w + 7, NULL, 10);
    }
  return n_pids > 0;
}

/* A frame header, the type string padded to 8 bytes behind a length, and
 * the serialized value: only a first guess, corrected by what the worker
 * is seen to write. */
static gsize
estimate_frame (GVariant *value)
{
  gsize type_len = strlen (g_variant_get_type_string (value));

  return WIRE_HEADER_BYTES + ((4 + type_len + 1 + 7) & ~(gsize) 7) + g_variant_get_size (value);
}

gboolean
bench_measure_frames (DcDetachedCode *pool,
                      GVariant       *args,
                      guint           calls,
                      BenchFrames    *frames)
{
  Sequence seq = { pool, args, NULL, calls, FALSE };
  guint64 r0 = 0, w0 = 0, r1 = 0, w1 = 0;
  gboolean have_io;
  gsize guess_call, guess_reply;

  g_assert (calls > 0);
  /* One call first, so that the pool has its workers to read. */
  seq.left = 1;
  dc_detached_code_call_async (pool, args, G_PRIORITY_DEFAULT, NULL, sequence_cb, &seq);
  if (!bench_loop_run (60))
    bench_fail ("hang: a single call did not complete in 60 s");
  if (seq.failed || seq.left > 0)
    {
      g_clear_pointer (&seq.last, g_variant_unref);
      return FALSE;
    }

  have_io = workers_io (pool, &r0, &w0);
  seq.left = calls;
  dc_detached_code_call_async (pool, args, G_PRIORITY_DEFAULT, NULL, sequence_cb, &seq);
  if (!bench_loop_run (120))
    bench_fail ("hang: %u of %u sequential calls completed in 120 s", calls - seq.left, calls);
  if (seq.failed || seq.left > 0)
    {
      g_clear_pointer (&seq.last, g_variant_unref);
      return FALSE;
    }
  have_io = have_io && workers_io (pool, &r1, &w1);

  guess_call = estimate_frame (args);
  guess_reply = estimate_frame (seq.last);
  frames->call = guess_call;
  frames->reply = guess_reply;
  frames->how = "estimated";
  if (have_io && w1 > w0)
    {
      /* Calls and replies share one framing, so the call carries the
       * overhead the reply is seen to carry.  (rchar would tell the call
       * directly only if the worker never used recv(), which it misses.) */
      frames->reply = (gsize) ((w1 - w0 + calls / 2) / calls);
      frames->call = guess_call + frames->reply - guess_reply;
      frames->how = "reply measured from the worker's /proc/PID/io, call derived";
    }
  g_clear_pointer (&seq.last, g_variant_unref);
  return TRUE;
}

DcDetachedCode *
bench_pool_new (DcCodeFunc  func,
                gpointer    user_data,
                guint       workers,
                const char *first_property_name,
                ...)
{
  g_autoptr(GError) error = NULL;
  DcDetachedCode *pool = dc_detached_code_new (func, user_data, NULL);
  va_list args;

  g_object_set (pool, "min-workers", workers, "max-workers", workers, NULL);
  va_start (args, first_property_name);
  if (first_property_name != NULL)
    g_object_set_valist (G_OBJECT (pool), first_property_name, args);
  va_end (args);
  if (!dc_detached_code_start (pool, &error))
    {
      g_printerr ("dc_detached_code_start: %s\n", error->message);
      exit (1);
    }
  return pool;
}

gboolean
bench_have_property (const char *name)
{
  GObjectClass *klass = g_type_class_ref (DC_TYPE_DETACHED_CODE);
  gboolean found = g_object_class_find_property (klass, name) != NULL;

  g_type_class_unref (klass);
  return found;
}

gboolean
bench_have_pipeline_depth (void)
{
  return bench_have_property ("pipeline-depth");
}

/* -1 when the kernel does not say (CONFIG_PROC_CHILDREN). */
static int
count_children (void)
{
  /* Children belong to the thread that forked them: this one, for every
   * process the programs and their pools make. */
  g_autofree char *path = g_strdup_printf ("/proc/self/task/%d/children", (int) gettid ());
  g_autofree char *contents = NULL;
  char **words;
  int n;

  if (!g_file_get_contents (path, &contents, NULL, NULL))
    return -1;
  words = g_strsplit_set (g_strstrip (contents), " ", -1);
  n = words[0] == NULL || *words[0] == '\0' ? 0 : (int) g_strv_length (words);
  g_strfreev (words);
  return n;
}

gboolean
bench_wait_children (double timeout_s)
{
  gint64 deadline = bench_now_ns () + (gint64) (timeout_s * 1e9);
  int n;

  for (;;)
    {
      while (g_main_context_iteration (NULL, FALSE))
        ;
      n = count_children ();
      if (n <= 0 || bench_now_ns () >= deadline)
        break;
      g_usleep (50);
    }
  return n == 0;
}

static gboolean
pid_exists (GPid pid)
{
  /* A zombie still answers; only a reaped pid is gone. */
  return kill (pid, 0) == 0 || errno != ESRCH;
}

void
bench_pool_destroy (DcDetachedCode *pool)
{
  guint n_pids = 0, i;
  g_autofree GPid *pids = dc_detached_code_get_worker_pids (pool, &n_pids);
  gint64 deadline;
  gboolean alive = TRUE;

  dc_detached_code_shutdown (pool);

  deadline = bench_now_ns () + 10 * G_GINT64_CONSTANT (1000000000);
  while (alive && bench_now_ns () < deadline)
    {
      while (g_main_context_iteration (NULL, FALSE))
        ;
      alive = FALSE;
      for (i = 0; i < n_pids; i++)
        alive = alive || pid_exists (pids[i]);
      if (alive)
        g_usleep (200);
    }

  for (i = 0; i < n_pids; i++)
    if (pid_exists (pids[i]))
      {
        bench_fail ("worker %d still exists 10 s after dc_detached_code_shutdown(); "
                    "killing it", (int) pids[i]);
        kill (pids[i], SIGKILL);
      }

  g_object_unref (pool);
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

static gboolean
loop_timeout_cb (gpointer data)
{
  gboolean *timed_out = data;

  *timed_out = TRUE;
  g_main_loop_quit (loop);
  return G_SOURCE_REMOVE;
}

gboolean
bench_loop_run (double timeout_s)
{
  gboolean timed_out = FALSE;
  guint id = g_timeout_add ((guint) (timeout_s * 1000), loop_timeout_cb, &timed_out);

  g_main_loop_run (loop);
  if (!timed_out)
    g_source_remove (id);
  return !timed_out;
}

void
bench_loop_quit (void)
{
  g_main_loop_quit (loop);
}
