/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The synopsis of IO::Async::DetachedCode, with DcDetachedCode:
 *
 *   dc-prime [--workers N] NUMBER...
 *
 * tests each NUMBER for primality in worker processes while the main loop
 * stays free, and prints the answers as they come.
 */

#include <stdlib.h>

#include <detached-code.h>

static GVariant *
is_prime (GVariant  *args,
          gpointer   user_data,
          GError   **error)
{
  guint64 n, d;

  if (!g_variant_is_of_type (args, G_VARIANT_TYPE ("(t)")))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "expected (t), got %s", g_variant_get_type_string (args));
      return NULL;
    }

  g_variant_get (args, "(t)", &n);
  if (n < 2)
    return g_variant_new ("(b)", FALSE);
  for (d = 2; d <= n / d; d++)
    if (n % d == 0)
      return g_variant_new ("(b)", FALSE);
  return g_variant_new ("(b)", TRUE);
}

typedef struct
{
  GMainLoop *loop;
  guint      pending;
  int        status;
} State;

typedef struct
{
  State   *state;
  guint64  number;
} Request;

static void
on_result (GObject      *source,
           GAsyncResult *result,
           gpointer      user_data)
{
  g_autofree Request *request = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source),
                                                            result, &error);
  gboolean prime;

  if (value == NULL)
    {
      g_printerr ("Cannot determine if it's prime - %s\n", error->message);
      request->state->status = EXIT_FAILURE;
    }
  else
    {
      g_variant_get (value, "(b)", &prime);
      g_print ("%" G_GUINT64_FORMAT " %s a prime number\n",
               request->number, prime ? "is" : "is not");
    }

  if (--request->state->pending == 0)
    g_main_loop_quit (request->state->loop);
}

int
main (int   argc,
      char *argv[])
{
  g_autoptr(GOptionContext) context = NULL;
  g_autoptr(DcDetachedCode) code = NULL;
  g_autoptr(GMainLoop) loop = NULL;
  g_autoptr(GError) error = NULL;
  int workers = 1;
  State state = { NULL, 0, EXIT_SUCCESS };
  GOptionEntry entries[] = {
    { "workers", 'w', 0, G_OPTION_ARG_INT, &workers, "Worker processes to use", "N" },
    G_OPTION_ENTRY_NULL
  };
  int i;

  context = g_option_context_new ("NUMBER... - tell primes in worker processes");
  g_option_context_add_main_entries (context, entries, NULL);
  if (!g_option_context_parse (context, &argc, &argv, &error))
    {
      g_printerr ("%s\n", error->message);
      return EXIT_FAILURE;
    }
  if (argc < 2 || workers < 1)
    {
      g_autofree char *help = g_option_context_get_help (context, TRUE, NULL);
      g_printerr ("%s", help);
      return EXIT_FAILURE;
    }

  loop = g_main_loop_new (NULL, FALSE);
  state.loop = loop;

  code = dc_detached_code_new (is_prime, NULL, NULL);
  g_object_set (code, "min-workers", workers, "max-workers", workers, NULL);
  /* Fork early, before anything in this process makes threads. */
  if (!dc_detached_code_start (code, &error))
    {
      g_printerr ("%s\n", error->message);
      return EXIT_FAILURE;
    }

  for (i = 1; i < argc; i++)
    {
      Request *request;
      guint64 number;

      if (!g_ascii_string_to_unsigned (argv[i], 10, 0, G_MAXUINT64, &number, &error))
        {
          g_printerr ("%s: %s\n", argv[i], error->message);
          return EXIT_FAILURE;
        }

      request = g_new0 (Request, 1);
      request->state = &state;
      request->number = number;
      state.pending++;
      dc_detached_code_call_async (code, g_variant_new ("(t)", number), G_PRIORITY_DEFAULT,
                                   NULL, on_result, request);
    }

  g_main_loop_run (loop);
  return state.status;
}
