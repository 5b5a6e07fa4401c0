/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The library's messages are translated, in the parent, with its own
 * gettext domain. */

#include "config.h"

#include <locale.h>
#include <libintl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <detached-code.h>

static GVariant *
exit_code (GVariant  *args,
           gpointer   user_data,
           GError   **error)
{
  _exit (3);
}

static void
done_cb (GObject      *source,
         GAsyncResult *result,
         gpointer      data)
{
  GError **error = data;
  GVariant *value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), result, error);

  g_assert_null (value);
}

static gboolean
deadline_cb (gpointer data)
{
  g_error ("timed out");
  return G_SOURCE_REMOVE;
}

static void
test_worker_died_in_german (void)
{
  g_autoptr(DcDetachedCode) code = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *localedir = NULL;
  guint deadline;

  if (setlocale (LC_ALL, "de_DE.UTF-8") == NULL)
    {
      g_test_skip ("No de_DE.UTF-8 locale here (CI generates one with locale-gen)");
      return;
    }

  /* The class binds the installed catalogue; point it at the one just
   * built instead. */
  g_type_class_unref (g_type_class_ref (DC_TYPE_DETACHED_CODE));
  localedir = g_test_build_filename (G_TEST_BUILT, "..", "po", NULL);
  bindtextdomain (GETTEXT_PACKAGE, localedir);

  code = dc_detached_code_new (exit_code, NULL, NULL);
  dc_detached_code_call_async (code, NULL, G_PRIORITY_DEFAULT, NULL, done_cb, &error);
  deadline = g_timeout_add_seconds (60, deadline_cb, NULL);
  while (error == NULL)
    g_main_context_iteration (NULL, TRUE);
  g_source_remove (deadline);

  g_test_message ("%s", error->message);
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_assert_nonnull (strstr (error->message, "Arbeitsprozess"));
  g_assert_nonnull (strstr (error->message, "3"));
  g_assert_null (strstr (error->message, "Worker process"));

  setlocale (LC_ALL, "C.UTF-8");
}

int
main (int   argc,
      char *argv[])
{
  g_unsetenv ("LANGUAGE");
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/i18n/worker-died", test_worker_died_in_german);

  return g_test_run ();
}
