/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* A hostile worker: its code writes crafted frames on its own channel.
 * The parent fails the call with PROTOCOL, kills and reaps that worker,
 * keeps nothing it sent, and goes on. */

#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dc-wire-private.h"

#include "dc-test-common.h"

/* The channel is the worker's highest descriptor. */
static void
send_raw (const guint8 *data,
          gsize         len,
          const int    *fds,
          guint         n_fds)
{
  g_assert_cmpint (dc_wire_sendmsg (highest_fd (), data, len, fds, n_fds), ==, (gssize) len);
}

static void
send_frame (DcWireType    type,
            guint         n_fds_declared,
            guint64       serial,
            const guint8 *payload,
            gsize         size,
            const int    *fds,
            guint         n_fds)
{
  g_autoptr(GByteArray) frame = g_byte_array_new ();
  guint8 header[DC_WIRE_HEADER_SIZE];

  dc_wire_header_encode_full (header, type, 0, n_fds_declared, serial, size);
  g_byte_array_append (frame, header, sizeof header);
  g_byte_array_append (frame, payload, (guint) size);
  send_raw (frame->data, frame->len, fds, n_fds);
}

/* Runs in the worker: ("what", serial of this call, argument). */
static GVariant *
hostile_code (GVariant  *args,
              gpointer   user_data,
              GError   **error)
{
  const char *what, *arg;
  guint64 serial;

  g_variant_get (args, "(&st&s)", &what, &serial, &arg);

  if (g_str_equal (what, "pid"))
    return g_variant_new ("(i)", (gint32) getpid ());

  if (g_str_equal (what, "indefinite"))
    {
      /* A variant payload whose type, @arg, is valid but names no value. */
      gsize type_len = strlen (arg);
      gsize offset = (4 + type_len + 1 + 7) & ~(gsize) 7;
      gsize size = offset + 1024 * 1024;
      g_autofree guint8 *payload = g_malloc0 (size);
      guint32 len32 = (guint32) type_len;

      memcpy (payload, &len32, 4);
      memcpy (payload + 4, arg, type_len);
      send_frame (DC_WIRE_RESULT, 0, serial, payload, size, NULL, 0);
    }
  else if (g_str_equal (what, "setup-failed"))
    {
      guint32 words[2] = { DC_WIRE_SETUP_STEP_CWD, ENOENT };

      send_frame (DC_WIRE_SETUP_FAILED, 0, 0, (const guint8 *) words, sizeof words, NULL, 0);
    }
  else if (g_str_equal (what, "stray-fds"))
    {
      /* A proper reply, with descriptors it does not declare. */
      g_autoptr(GVariant) value = g_variant_ref_sink (g_variant_new ("()"));
      DcWireMarshalStatus status;
      g_autoptr(GBytes) reply = dc_wire_marshal_raw (DC_MARSHALLER_VARIANT, value, &status);
      int fds[3] = { 0, 1, 2 };

      send_frame (DC_WIRE_RESULT, 0, serial, g_bytes_get_data (reply, NULL),
                  g_bytes_get_size (reply), fds, 3);
    }
  else if (g_str_equal (what, "missing-fds"))
    {
      g_autoptr(GVariant) value = g_variant_ref_sink (g_variant_new ("()"));
      DcWireMarshalStatus status;
      g_autoptr(GBytes) reply = dc_wire_marshal_raw (DC_MARSHALLER_VARIANT, value, &status);

      send_frame (DC_WIRE_RESULT, 5, serial, g_bytes_get_data (reply, NULL),
                  g_bytes_get_size (reply), NULL, 0);
    }
  else if (g_str_equal (what, "fds-between"))
    {
      /* Descriptors on a byte of no frame: sent alone, before a reply. */
      g_autoptr(GVariant) value = g_variant_ref_sink (g_variant_new ("()"));
      DcWireMarshalStatus status;
      g_autoptr(GBytes) reply = dc_wire_marshal_raw (DC_MARSHALLER_VARIANT, value, &status);
      g_autoptr(GByteArray) frame = g_byte_array_new ();
      guint8 header[DC_WIRE_HEADER_SIZE];
      int fds[2] = { 1, 2 };

      dc_wire_header_encode (header, DC_WIRE_RESULT, serial, g_bytes_get_size (reply));
      g_byte_array_append (frame, header, sizeof header);
      g_byte_array_append (frame, g_bytes_get_data (reply, NULL), (guint) g_bytes_get_size (reply));
      send_raw (frame->data, frame->len, NULL, 0);
      /* The next frame's first byte carries descriptors its header,
       * sent after, does not declare. */
      dc_wire_header_encode (header, DC_WIRE_RESULT, serial + 1, 0);
      send_raw (header, 1, fds, 2);
      send_raw (header + 1, sizeof header - 1, NULL, 0);
    }
  else if (g_str_equal (what, "fixed-size-huge"))
    {
      /* A value of type (i) 64 MiB long: GLib would copy all of it in the
       * parent to read it as the default value. */
      gsize offset = (4 + 3 + 1 + 7) & ~(gsize) 7;
      gsize size = offset + 64 * 1024 * 1024;
      g_autofree guint8 *payload = g_malloc0 (size);
      guint32 len32 = 3;

      memcpy (payload, &len32, 4);
      memcpy (payload + 4, "(i)", 3);
      send_frame (DC_WIRE_RESULT, 0, serial, payload, size, NULL, 0);
    }
  else if (g_str_equal (what, "close-channel"))
    {
      /* It cannot answer any more, yet it goes on running. */
      close (highest_fd ());
    }

  /* It lies, then waits to be killed; an answer now would come late. */
  g_usleep (60 * G_USEC_PER_SEC);
  return g_variant_new ("()");
}

static guint64 next_serial;

static GVariant *
args (const char *what,
      const char *arg)
{
  return g_variant_new ("(sts)", what, next_serial++, arg ? arg : "");
}

static DcDetachedCode *
hostile_pool (GPid *pid)
{
  DcDetachedCode *code = dc_detached_code_new (hostile_code, NULL, NULL);
  Result r = { 0, };

  next_serial = 1;
  call_sync (code, args ("pid", NULL), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(i)", pid);
  result_clear (&r);
  return code;
}

static guint
count_fds (void)
{
  g_autoptr(GVariant) fds = g_variant_ref_sink (list_fds ());

  return (guint) g_variant_n_children (fds);
}

/* The lie costs its call a PROTOCOL error naming the pid; the liar is
 * reaped; the next call gets a new worker; the parent keeps nothing. */
static void
check_rejected (const char *what,
                const char *arg)
{
  guint fds_before = count_fds ();
  GPid pid, next;
  DcDetachedCode *code = hostile_pool (&pid);
  g_autofree char *pid_text = g_strdup_printf ("%d", (int) pid);
  Result r = { 0, };

  call_sync (code, args (what, arg), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_assert_nonnull (strstr (r.error->message, pid_text));
  g_test_message ("%s: %s", what, r.error->message);
  result_clear (&r);
  assert_process_gone (pid);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);

  call_sync (code, args ("pid", NULL), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(i)", &next);
  g_assert_cmpint (next, !=, pid);
  result_clear (&r);

  destroy_pool (code);
  g_assert_cmpuint (count_fds (), ==, fds_before);
}

static void
test_hostile_indefinite_type (void)
{
  const char *types[] = { "(?)", "*", "a?", "m*", "r", "a{?s}" };
  guint i, round;

  /* Each carries 1 MiB: rounds enough to see it leak under a leak
   * checker, and no critical (fatal here) on the way. */
  for (round = 0; round < 4; round++)
    for (i = 0; i < G_N_ELEMENTS (types); i++)
      check_rejected ("indefinite", types[i]);
}

static void
test_hostile_setup_failed_while_working (void)
{
  guint fds_before = count_fds ();
  GPid pid;
  DcDetachedCode *code = hostile_pool (&pid);
  Result r = { 0, };
  guint i;

  /* A worker that answered already cannot be failing its set-up: it is
   * killed, not left to run unwatched. */
  for (i = 0; i < 20; i++)
    {
      call_sync (code, args ("setup-failed", NULL), &r);
      g_assert_nonnull (r.error);
      g_assert_true (g_error_matches (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL) ||
                     g_error_matches (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN));
      result_clear (&r);
      assert_process_gone (pid);
      g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);

      call_sync (code, args ("pid", NULL), &r);
      g_assert_no_error (r.error);
      g_variant_get (r.value, "(i)", &pid);
      result_clear (&r);
    }
  destroy_pool (code);
  g_assert_cmpuint (count_fds (), ==, fds_before);
}

static void
test_hostile_fixed_size (void)
{
  check_rejected ("fixed-size-huge", NULL);
}

static void
test_hostile_close_channel (void)
{
  guint fds_before = count_fds ();
  GPid pid;
  DcDetachedCode *code = hostile_pool (&pid);
  g_autofree char *pid_text = g_strdup_printf ("%d", (int) pid);
  Result r = { 0, }, queued = { 0, };
  GPid next;

  /* One worker, and a call queued behind the one it holds: a worker that
   * closed its channel and went on running must not hold either for the
   * rest of its life (a minute here: the deadline would fail first). */
  dc_detached_code_set_max_workers (code, 1);
  call (code, args ("close-channel", NULL), &r);
  call (code, args ("pid", NULL), &queued);
  wait_for_flag (&r.done, "the call of a worker that closed its channel");
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_assert_nonnull (strstr (r.error->message, pid_text));
  g_assert_nonnull (strstr (r.error->message, "closed its channel"));
  result_clear (&r);
  assert_process_gone (pid);

  wait_for_flag (&queued.done, "the call queued behind it");
  g_assert_no_error (queued.error);
  g_variant_get (queued.value, "(i)", &next);
  g_assert_cmpint (next, !=, pid);
  result_clear (&queued);

  destroy_pool (code);
  g_assert_cmpuint (count_fds (), ==, fds_before);
}

static void
test_hostile_stray_fds (void)
{
  check_rejected ("stray-fds", NULL);
}

static void
test_hostile_missing_fds (void)
{
  check_rejected ("missing-fds", NULL);
}

static void
test_hostile_fds_between_frames (void)
{
  guint fds_before = count_fds ();
  GPid pid;
  DcDetachedCode *code = hostile_pool (&pid);
  Result r = { 0, };

  /* Its reply is proper; whether it is kept depends on whether the stray
   * descriptors came in the same read.  Either way the call completes,
   * and the liar goes. */
  call_sync (code, args ("fds-between", NULL), &r);
  if (r.error != NULL)
    g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  else
    g_assert_true (g_variant_is_of_type (r.value, G_VARIANT_TYPE ("()")));
  result_clear (&r);
  assert_process_gone (pid);
  destroy_pool (code);
  g_assert_cmpuint (count_fds (), ==, fds_before);
}

int
main (int   argc,
      char *argv[])
{
  GPid pid;

  g_test_init (&argc, &argv, NULL);

  /* GLib opens descriptors of its own on first use (a main context's
   * wake-up): open them before any test counts. */
  destroy_pool (hostile_pool (&pid));

  g_test_add_func ("/detached-code/hostile/indefinite-type", test_hostile_indefinite_type);
  g_test_add_func ("/detached-code/hostile/setup-failed-while-working",
                   test_hostile_setup_failed_while_working);
  g_test_add_func ("/detached-code/hostile/stray-fds", test_hostile_stray_fds);
  g_test_add_func ("/detached-code/hostile/fixed-size", test_hostile_fixed_size);
  g_test_add_func ("/detached-code/hostile/close-channel", test_hostile_close_channel);
  g_test_add_func ("/detached-code/hostile/missing-fds", test_hostile_missing_fds);
  g_test_add_func ("/detached-code/hostile/fds-between-frames", test_hostile_fds_between_frames);

  return g_test_run ();
}
