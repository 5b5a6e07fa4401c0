/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Time limits on calls (call-timeout), alone and pipelined. */

#include "config.h"

#include <string.h>

#include "dc-test-common.h"

static void
test_call_timeout (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, }, a = { 0, }, b = { 0, };
  GPid pid = call_pid (code);
  g_autofree char *pid_text = g_strdup_printf ("%d", (int) pid);

  dc_detached_code_set_call_timeout (code, 300);
  g_assert_cmpuint (dc_detached_code_get_call_timeout (code), ==, 300);
  call_sync (code, cmd ("sleep", g_variant_new_int32 (60000)), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_TIMED_OUT);
  g_assert_nonnull (strstr (r.error->message, "300 ms"));
  g_assert_nonnull (strstr (r.error->message, pid_text));
  result_clear (&r);
  assert_process_gone (pid);

  /* Time in the queue does not count: each runs 3 s of a 4.5 s limit, the
   * second after waiting 3 s for the first. */
  dc_detached_code_set_call_timeout (code, 4500);
  call (code, cmd ("sleep", g_variant_new_int32 (3000)), &a);
  call (code, cmd ("sleep", g_variant_new_int32 (3000)), &b);
  wait_for_flag (&b.done, "queued calls under a time limit");
  g_assert_no_error (a.error);
  g_assert_no_error (b.error);
  result_clear (&a);
  result_clear (&b);
  destroy_pool (code);
}

static void
test_pool_pipeline_timeout (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result a = { 0, }, b = { 0, };

  /* Pipelined behind another, a call's limit counts from when it runs:
   * each takes 2 s of a 3 s limit, the second 4 s after its write. */
  dc_detached_code_set_pipeline_depth (code, 4);
  dc_detached_code_set_call_timeout (code, 3000);
  g_assert_true (dc_detached_code_start (code, NULL));
  call (code, cmd ("sleep", g_variant_new_int32 (2000)), &a);
  call (code, cmd ("sleep", g_variant_new_int32 (2000)), &b);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);
  wait_for_flag (&b.done, "pipelined calls under a time limit");
  g_assert_no_error (a.error);
  g_assert_no_error (b.error);
  result_clear (&a);
  result_clear (&b);
  destroy_pool (code);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/pool/pipeline-timeout", test_pool_pipeline_timeout);
  g_test_add_func ("/detached-code/call/timeout", test_call_timeout);

  return g_test_run ();
}
