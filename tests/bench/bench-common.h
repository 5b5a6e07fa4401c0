/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Shared pieces of the benchmark programs: timing, the result table, bare
 * socketpair peers for the baselines, and tearing pools down without
 * leaving a child behind.
 *
 * The machine these run on is small and noisy, so every program measures
 * its baseline in the same run and prints the ratio; the absolute figures
 * are for orientation only.
 */

#pragma once

#include <sys/types.h>

#include <detached-code.h>

G_BEGIN_DECLS

/* ---- options ---- */

/* Parses the options every program shares:
 *   --tsv       also print "@tsv<TAB>key<TAB>library<TAB>baseline" lines,
 *               for peers.sh
 *   WORD...     run only the cases whose key contains one of the words
 * and reads DC_BENCH_SCALE (a positive factor applied to every count). */
void        bench_init            (int          *argc,
                                   char       ***argv,
                                   const char   *title);
double      bench_scale           (void);
/* @base scaled, never below @min. */
guint       bench_count           (guint         base,
                                   guint         min);
gboolean    bench_selected        (const char   *key);
/* How many alternating rounds to run: DC_BENCH_ROUNDS, else @fallback. */
guint       bench_rounds          (guint         fallback);

/* ---- clocks ---- */

gint64      bench_now_ns          (void);
/* User plus system CPU time of this process, in microseconds. */
double      bench_self_cpu_us     (void);
/* User plus system CPU time of another process (from /proc), in
 * microseconds; -1 when it cannot be read.  Resolution is a clock tick. */
double      bench_pid_cpu_us      (pid_t         pid);

int         bench_compare_double  (gconstpointer a,
                                   gconstpointer b);
/* Sorts @values in place and returns the @q quantile (0..1). */
double      bench_quantile        (double       *values,
                                   gsize         n,
                                   double        q);

/* ---- the table ---- */

typedef enum
{
  BENCH_NO_TARGET,
  BENCH_RATIO_AT_MOST,    /* library/baseline must be <= target */
  BENCH_RATIO_AT_LEAST,   /* library/baseline must be >= target */
  BENCH_VALUE_AT_MOST,    /* the library figure itself must be <= target */
  BENCH_VALUE_AT_LEAST,   /* the library figure itself must be >= target */
} BenchTargetKind;

void        bench_table_begin     (const char   *heading);
/* One row.  @baseline <= 0 means there is none (the ratio is left blank).
 * The ratio is always library / baseline. */
void        bench_table_row       (const char   *key,
                                   const char   *label,
                                   double        library,
                                   double        baseline,
                                   const char   *unit,
                                   BenchTargetKind kind,
                                   double        target);
void        bench_table_note      (const char   *format,
                                   ...) G_GNUC_PRINTF (1, 2);
/* Prints the verdict count and returns the process exit status: always 0,
 * since a missed target is a finding, not a broken benchmark. */
int         bench_finish          (void);
/* Records a failure of the library (a lost call, an error, a hang); makes
 * bench_finish() return non-zero. */
void        bench_fail            (const char   *format,
                                   ...) G_GNUC_PRINTF (1, 2);

/* ---- bare peers for the baselines ---- */

typedef void (*BenchPeerFunc) (int fd, gpointer data);

typedef struct
{
  pid_t pid;
  int   fd;
} BenchPeer;

/* Forks a child that runs @func on its end of a fresh socketpair and then
 * _exit()s.  The child closes every other descriptor first, so it never
 * holds a pool's channel open. */
BenchPeer   bench_peer_spawn      (BenchPeerFunc func,
                                   gpointer      data);
/* Closes the parent's end and reaps the child. */
void        bench_peer_finish     (BenchPeer    *peer);

gboolean    bench_write_full      (int           fd,
                                   const void   *buf,
                                   gsize         len);
/* FALSE on error or end of stream. */
gboolean    bench_read_full       (int           fd,
                                   void         *buf,
                                   gsize         len);

typedef struct
{
  gsize    call;       /* bytes parent -> worker per call */
  gsize    reply;      /* bytes worker -> parent per call */
  const char *how;     /* how the sizes were found */
} BenchFrames;

/* A peer body: reads messages of frames->call bytes and answers each with
 * frames->reply bytes, until end of stream.  @data is a BenchFrames. */
void        bench_reply_peer      (int           fd,
                                   gpointer      data);

/* ---- pools ---- */

/* The code most benchmarks run: returns its arguments. */
GVariant   *bench_echo_code       (GVariant     *args,
                                   gpointer      user_data,
                                   GError      **error);

/* Bytes one call of @args puts on the channel each way (frame and all),
 * measured from the workers' /proc/PID/io over @calls sequential calls,
 * so that the baselines move what the library moves whatever its wire
 * format.  Where /proc tells nothing it falls back to an estimate.  FALSE
 * when a call failed. */
gboolean    bench_measure_frames  (DcDetachedCode *pool,
                                   GVariant     *args,
                                   guint         calls,
                                   BenchFrames  *frames);

/* A started pool of @workers workers (min = max) running @func, with the
 * NULL-terminated property list set before start().  Exits the program
 * when start() fails. */
DcDetachedCode *bench_pool_new    (DcCodeFunc    func,
                                   gpointer      user_data,
                                   guint         workers,
                                   const char   *first_property_name,
                                   ...);
/* Whether the pool class has a property of this name: some came later
 * than the first release of the class, and the programs still measure
 * what they can without them. */
gboolean    bench_have_property   (const char   *name);
/* Whether the pool class has a "pipeline-depth" property. */
gboolean    bench_have_pipeline_depth (void);
/* Runs the default main context until no child process of the calling
 * thread is left, the pool's reaped ones and any it let go (a worker
 * template reads the end of its channel and leaves on its own, unseen by
 * dc_detached_code_get_worker_pids()), so that their exits are not timed
 * with what comes next.  FALSE if some are still there after @timeout_s
 * seconds, or when the kernel does not list children (then it only runs
 * what is pending). */
gboolean    bench_wait_children   (double        timeout_s);
/* Shuts the pool down, runs the main context until every worker it had is
 * reaped (reporting any that is not), and drops the reference. */
void        bench_pool_destroy    (DcDetachedCode *pool);

/* Runs the default main loop until bench_loop_quit() or @timeout_s
 * seconds; returns FALSE on timeout. */
gboolean    bench_loop_run        (double        timeout_s);
void        bench_loop_quit       (void);

G_END_DECLS
