/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Calls and their errors: results, order, priority, marshalling, lying workers. */

#include "config.h"

#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dc-test-common.h"

static GVariant *
is_prime (GVariant  *args,
          gpointer   user_data,
          GError   **error)
{
  guint64 n, d;

  g_variant_get (args, "(t)", &n);
  for (d = 2; d <= n / d; d++)
    if (n % d == 0)
      return g_variant_new ("(b)", FALSE);
  return g_variant_new ("(b)", n >= 2);
}

static void
test_call_basic (void)
{
  DcDetachedCode *code = dc_detached_code_new (is_prime, NULL, NULL);
  Result r = { 0, }, r2 = { 0, };
  gboolean prime = TRUE;

  call_sync (code, g_variant_new ("(t)", G_GUINT64_CONSTANT (123454321)), &r);
  g_assert_no_error (r.error);
  g_assert_cmpstr (g_variant_get_type_string (r.value), ==, "(b)");
  g_variant_get (r.value, "(b)", &prime);
  g_assert_false (prime);   /* 11111 squared */

  call_sync (code, g_variant_new ("(t)", G_GUINT64_CONSTANT (1000003)), &r2);
  g_variant_get (r2.value, "(b)", &prime);
  g_assert_true (prime);
  g_assert_cmpuint (r.times_called + r2.times_called, ==, 2);

  result_clear (&r);
  result_clear (&r2);
  destroy_pool (code);
}

static void
test_call_not_before_return (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };

  /* Even an argument that fails at once completes only from the loop. */
  dc_detached_code_set_marshaller (code, DC_MARSHALLER_FLAT);
  call (code, g_variant_new ("(i)", 1), &r);
  g_assert_false (r.done);
  wait_for_flag (&r.done, "a refused call");
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  result_clear (&r);

  dc_detached_code_set_marshaller (code, DC_MARSHALLER_VARIANT);
  g_assert_true (dc_detached_code_start (code, NULL));
  call (code, cmd ("pid", NULL), &r);
  g_assert_false (r.done);
  wait_for_flag (&r.done, "a call");
  g_assert_no_error (r.error);
  result_clear (&r);
  destroy_pool (code);
}

static void
test_call_args_serialized (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };
  g_autofree char *buffer = g_strdup ("before");
  GVariant *arg = g_variant_new_from_data (G_VARIANT_TYPE_STRING, buffer, strlen (buffer) + 1,
                                           FALSE, NULL, NULL);
  const char *seen;

  /* Floating: the pool sinks it.  Changed right after the call: the
   * worker still sees what was passed. */
  call (code, cmd ("echo", arg), &r);
  memcpy (buffer, "AFTER!", 6);
  wait_for_flag (&r.done, "a call");
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(v)", &arg);
  seen = g_variant_get_string (arg, NULL);
  g_assert_cmpstr (seen, ==, "before");
  g_variant_unref (arg);
  result_clear (&r);
  destroy_pool (code);
}

static GVariant *
return_args (GVariant  *args,
             gpointer   user_data,
             GError   **error)
{
  return g_variant_ref (args);
}

static void
test_call_null_args (void)
{
  DcDetachedCode *code = dc_detached_code_new (return_args, NULL, NULL);
  Result r = { 0, };

  call_sync (code, NULL, &r);
  g_assert_no_error (r.error);
  g_assert_cmpstr (g_variant_get_type_string (r.value), ==, "()");
  result_clear (&r);
  destroy_pool (code);
}

static void
test_call_order_one_worker (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result results[200] = { { 0, }, };
  guint i, previous_order = 0;

  for (i = 0; i < G_N_ELEMENTS (results); i++)
    call (code, cmd ("index", g_variant_new_int32 ((gint32) i)), &results[i]);
  wait_for_flag (&results[G_N_ELEMENTS (results) - 1].done, "the last call");

  for (i = 0; i < G_N_ELEMENTS (results); i++)
    {
      gint32 index, pid;

      g_assert_true (results[i].done);
      g_assert_no_error (results[i].error);
      g_variant_get (results[i].value, "(ii)", &index, &pid);
      g_assert_cmpint (index, ==, (gint32) i);
      if (i > 0)
        g_assert_cmpuint (results[i].order, ==, previous_order + 1);
      previous_order = results[i].order;
      result_clear (&results[i]);
    }
  destroy_pool (code);
}

static void
test_call_priority (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result blocker = { 0, };
  Result r[6] = { { 0, }, };
  int priorities[6] = { G_PRIORITY_LOW, G_PRIORITY_DEFAULT, G_PRIORITY_HIGH,
                        G_PRIORITY_DEFAULT, G_PRIORITY_HIGH, G_PRIORITY_LOW };
  /* expected completion: HIGH(2), HIGH(4), DEFAULT(1), DEFAULT(3), LOW(0), LOW(5) */
  guint expected[6] = { 2, 4, 1, 3, 0, 5 };
  guint i;

  g_assert_true (dc_detached_code_start (code, NULL));
  /* Occupy the only worker so the rest queue up. */
  call (code, cmd ("sleep", g_variant_new_int32 (300)), &blocker);
  for (i = 0; i < 6; i++)
    dc_detached_code_call_async (code, cmd ("index", g_variant_new_int32 ((gint32) i)),
                                 priorities[i], NULL, result_cb, &r[i]);
  for (i = 0; i < 6; i++)
    wait_for_flag (&r[i].done, "prioritised calls");

  for (i = 0; i < 6; i++)
    {
      g_assert_no_error (r[expected[i]].error);
      g_assert_cmpuint (r[expected[i]].order, ==, blocker.order + 1 + i);
    }
  result_clear (&blocker);
  for (i = 0; i < 6; i++)
    result_clear (&r[i]);
  destroy_pool (code);
}

static void
test_call_many (void)
{
  const guint n_calls = 10000;
  DcDetachedCode *code = new_pool (1, 3);
  Result *results = g_new0 (Result, n_calls);
  g_autoptr(GHashTable) pids = g_hash_table_new (NULL, NULL);
  guint i, n_pids = 0;
  g_autofree GPid *worker_pids = NULL;

  for (i = 0; i < n_calls; i++)
    call (code, cmd ("index", g_variant_new_int32 ((gint32) i)), &results[i]);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), <=, 3);

  for (i = 0; i < n_calls; i++)
    wait_for_flag (&results[i].done, "many calls");

  worker_pids = dc_detached_code_get_worker_pids (code, &n_pids);
  for (i = 0; i < n_calls; i++)
    {
      gint32 index, pid;

      /* Exactly once each, with its own answer. */
      g_assert_cmpuint (results[i].times_called, ==, 1);
      g_assert_no_error (results[i].error);
      g_variant_get (results[i].value, "(ii)", &index, &pid);
      g_assert_cmpint (index, ==, (gint32) i);
      g_assert_cmpint (pid, !=, getpid ());
      g_hash_table_add (pids, GINT_TO_POINTER (pid));
      result_clear (&results[i]);
    }
  g_assert_cmpuint (g_hash_table_size (pids), <=, 3);
  g_assert_cmpuint (g_hash_table_size (pids), >=, 1);
  g_assert_cmpuint (n_pids, ==, dc_detached_code_get_n_workers (code));
  g_free (results);
  destroy_pool (code);
}

static void
test_error_round_trip (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };

  call_sync (code, cmd ("error", g_variant_new_string ("the key")), &r);
  g_assert_null (r.value);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_cmpstr (r.error->message, ==, "not found: the key");
  result_clear (&r);

  /* A domain the parent never registered arrives by its name. */
  call_sync (code, cmd ("custom-error", g_variant_new_int32 (17)), &r);
  g_assert_cmpstr (g_quark_to_string (r.error->domain), ==, "dc-test-custom-error-quark");
  g_assert_cmpint (r.error->code, ==, 17);
  g_assert_cmpstr (r.error->message, ==, "custom failure");
  result_clear (&r);

  /* The worker survives its code's errors. */
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 1);
  destroy_pool (code);
}

static void
test_error_failed (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };

  call_sync (code, cmd ("null", NULL), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED);
  g_assert_nonnull (strstr (r.error->message, "no value"));
  result_clear (&r);
  destroy_pool (code);
}

static void
test_error_spawn (void)
{
  if (g_test_subprocess ())
    {
      DcDetachedCode *code = new_pool (1, 1);
      g_autoptr(GError) error = NULL;
      struct rlimit rl, saved;
      Result r = { 0, };
      g_autoptr(GArray) fillers = g_array_new (FALSE, FALSE, sizeof (int));
      guint i;
      int top, fd;

      /* GLib's own descriptors first (the main context's wake-up). */
      g_main_context_iteration (NULL, FALSE);
      top = highest_fd ();

      /* Fill every free number under a low limit, then free one: room for
       * one descriptor, not for a channel, so socketpair() fails. */
      g_assert_cmpint (getrlimit (RLIMIT_NOFILE, &saved), ==, 0);
      rl.rlim_cur = (rlim_t) top + 8;
      rl.rlim_max = saved.rlim_max;
      g_assert_cmpint (setrlimit (RLIMIT_NOFILE, &rl), ==, 0);
      while ((fd = open ("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        g_array_append_val (fillers, fd);
      g_assert_cmpuint (fillers->len, >, 0);
      close (g_array_index (fillers, int, fillers->len - 1));
      g_array_set_size (fillers, fillers->len - 1);

      g_assert_false (dc_detached_code_start (code, &error));
      g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN);

      /* A call cannot wait on a pool with no worker: it fails. */
      call_sync (code, cmd ("pid", NULL), &r);
      g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN);
      result_clear (&r);
      g_object_unref (code);
      /* Leak checkers need descriptors at exit. */
      for (i = 0; i < fillers->len; i++)
        close (g_array_index (fillers, int, i));
      setrlimit (RLIMIT_NOFILE, &saved);
      return;
    }

  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed ();
}

static void
test_error_no_func (void)
{
  /* What a binding's plain constructor makes. */
  DcDetachedCode *code = g_object_new (DC_TYPE_DETACHED_CODE, NULL);
  g_autoptr(GError) error = NULL;
  Result r = { 0, };

  g_assert_false (dc_detached_code_start (code, &error));
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED);
  call (code, cmd ("pid", NULL), &r);
  g_assert_false (r.done);
  wait_for_flag (&r.done, "a call on a pool without code");
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);
  result_clear (&r);
  g_object_unref (code);
}

static GVariant *
flat_code (GVariant  *args,
           gpointer   user_data,
           GError   **error)
{
  const char *first = NULL;

  if (g_variant_n_children (args) > 0)
    g_variant_get_child (args, 0, "&s", &first);
  if (g_strcmp0 (first, "int") == 0)
    return g_variant_new ("(i)", 3);
  return g_variant_ref (args);
}

static void
test_marshal_flat (void)
{
  DcDetachedCode *code = dc_detached_code_new (flat_code, NULL, NULL);
  Result r = { 0, };
  g_autoptr(GVariant) args = NULL;

  dc_detached_code_set_marshaller (code, DC_MARSHALLER_FLAT);
  g_assert_cmpint (dc_detached_code_get_marshaller (code), ==, DC_MARSHALLER_FLAT);

  /* g_variant_parse() returns a full reference, not a floating one. */
  args = g_variant_parse (G_VARIANT_TYPE ("(smss)"), "('hello', @ms nothing, 'wörld')",
                          NULL, NULL, NULL);
  call_sync (code, args, &r);
  g_assert_no_error (r.error);
  g_assert_true (g_variant_equal (r.value, args));
  result_clear (&r);

  /* Refused going out... */
  call_sync (code, g_variant_new ("(si)", "x", 1), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  g_assert_nonnull (strstr (r.error->message, "(si)"));
  result_clear (&r);

  /* ...and coming back. */
  call_sync (code, g_variant_new ("(s)", "int"), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  g_assert_nonnull (strstr (r.error->message, "(i)"));
  result_clear (&r);

  /* The worker that could not send its result still serves. */
  call_sync (code, g_variant_new ("(s)", "again"), &r);
  g_assert_no_error (r.error);
  result_clear (&r);
  destroy_pool (code);
}

static void
test_marshal_variant_large (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };
  g_autoptr(GVariant) inner = NULL;
  g_autoptr(GVariant) bytes = NULL;
  const guint8 *data;
  gsize n, i;

  call_sync (code, cmd ("big", g_variant_new_int32 (5 << 20)), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(@ay)", &bytes);
  data = g_variant_get_fixed_array (bytes, &n, 1);
  g_assert_cmpuint (n, ==, 5 << 20);
  for (i = 0; i < n; i += 4099)
    g_assert_cmpuint (data[i], ==, (guint8) (i * 31));

  /* And the same bytes out and back. */
  result_clear (&r);
  call_sync (code, cmd ("echo", bytes), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(v)", &inner);
  g_assert_true (g_variant_equal (inner, bytes));
  result_clear (&r);
  destroy_pool (code);
}

static void
check_protocol_error (const char *command)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };
  GPid pid = call_pid (code);

  call_sync (code, cmd (command, NULL), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_test_message ("%s", r.error->message);
  result_clear (&r);
  /* The liar is killed and reaped; the pool carries on. */
  assert_process_gone (pid);
  g_assert_cmpint (call_pid (code), !=, pid);
  destroy_pool (code);
}

static void
test_protocol_garbage (void)
{
  check_protocol_error ("garbage");
}

static void
test_protocol_oversized (void)
{
  check_protocol_error ("oversized");
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/call/basic", test_call_basic);
  g_test_add_func ("/detached-code/call/not-before-return", test_call_not_before_return);
  g_test_add_func ("/detached-code/call/args-serialized", test_call_args_serialized);
  g_test_add_func ("/detached-code/call/null-args", test_call_null_args);
  g_test_add_func ("/detached-code/call/order-one-worker", test_call_order_one_worker);
  g_test_add_func ("/detached-code/call/priority", test_call_priority);
  g_test_add_func ("/detached-code/call/many", test_call_many);
  g_test_add_func ("/detached-code/error/round-trip", test_error_round_trip);
  g_test_add_func ("/detached-code/error/failed", test_error_failed);
  g_test_add_func ("/detached-code/error/spawn", test_error_spawn);
  g_test_add_func ("/detached-code/marshal/flat", test_marshal_flat);
  g_test_add_func ("/detached-code/marshal/variant-large", test_marshal_variant_large);
  g_test_add_func ("/detached-code/protocol/garbage", test_protocol_garbage);
  g_test_add_func ("/detached-code/protocol/oversized", test_protocol_oversized);
  g_test_add_func ("/detached-code/error/no-func", test_error_no_func);

  return g_test_run ();
}
