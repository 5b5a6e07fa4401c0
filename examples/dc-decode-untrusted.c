/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Decoding untrusted files in a sandboxed pool:
 *
 *   dc-decode-untrusted [--timeout MS] [--memory-limit MIB] FILE...
 *
 * decodes each FILE, a list of numbers in a made-up format, in a worker
 * that may read only the directories of the files given, and prints per
 * file what it holds or why it could not be decoded.
 *
 * The format: a first line "NUMS 1", then one decimal integer per line.
 * The decoder has a bug, as decoders do: it asserts that each line is a
 * number, where it should report a malformed file; such a file kills its
 * worker.  The pool survives it, and the error says what the worker wrote
 * to its stderr before it died (DC_SETUP_CAPTURE_STDERR).
 *
 * Exit status: 0 if every file was decoded, 1 if one was not, 2 for bad
 * arguments, 77 if this kernel cannot sandbox the filesystem (no
 * Landlock).
 */

#include <locale.h>
#include <stdlib.h>
#include <string.h>

#include <detached-code.h>

/* Runs in a worker, under the sandbox. */
static GVariant *
decode_numbers (GVariant  *args,
                gpointer   user_data,
                GError   **error)
{
  const char *path;
  g_autofree char *contents = NULL;
  g_autofree char *base = NULL;
  g_auto(GStrv) lines = NULL;
  gint64 sum = 0, min = G_MAXINT64, max = G_MININT64;
  guint32 count = 0;
  guint i;

  g_variant_get (args, "(&s)", &path);
  base = g_path_get_basename (path);
  g_printerr ("decoding \"%s\"\n", path);

  if (!g_file_get_contents (path, &contents, NULL, error))
    return NULL;

  lines = g_strsplit (contents, "\n", -1);
  if (lines[0] == NULL || strcmp (lines[0], "NUMS 1") != 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   "%s: not a NUMS 1 file", base);
      return NULL;
    }

  for (i = 1; lines[i] != NULL; i++)
    {
      gint64 value;
      gboolean is_number;

      if (lines[i][0] == '\0')
        continue;
      is_number = g_ascii_string_to_signed (lines[i], 10, G_MININT64, G_MAXINT64, &value, NULL);
      /* The bug: bad input is not a programming error. */
      if (!is_number)
        g_printerr ("%s: line %u is not a number: \"%.40s\"\n", base, i + 1, lines[i]);
      g_assert (is_number);

      sum += value;
      min = MIN (min, value);
      max = MAX (max, value);
      count++;
    }

  if (count == 0)
    return g_variant_new ("(uxxx)", count, (gint64) 0, (gint64) 0, (gint64) 0);
  return g_variant_new ("(uxxx)", count, sum, min, max);
}

typedef struct
{
  const char *name;
  GVariant   *value;
  GError     *error;
} Job;

static guint jobs_left;

static void
decoded_cb (GObject      *source,
            GAsyncResult *result,
            gpointer      user_data)
{
  Job *job = user_data;

  job->value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), result, &job->error);
  jobs_left--;
}

int
main (int   argc,
      char *argv[])
{
  gint timeout_ms = 5000;
  gint memory_mib = 512;
  g_auto(GStrv) files = NULL;
  GOptionEntry entries[] = {
    { "timeout", 't', 0, G_OPTION_ARG_INT, &timeout_ms, "Time a file may take, in ms", "MS" },
    { "memory-limit", 'm', 0, G_OPTION_ARG_INT, &memory_mib, "Address space of a worker", "MIB" },
    { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &files, NULL, "FILE…" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GOptionContext) options = g_option_context_new ("FILE… — decode untrusted files");
  g_autoptr(GHashTable) dirs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr(DcDetachedCode) code = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree Job *jobs = NULL;
  g_autofree char *cwd = g_get_current_dir ();
  GPtrArray *paths = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter iter;
  gpointer dir;
  guint i, n, failed = 0;

  /* Printed text in the user's encoding; what a worker wrote comes
   * through the library as valid UTF-8 already. */
  setlocale (LC_ALL, "");
  g_option_context_add_main_entries (options, entries, NULL);
  if (!g_option_context_parse (options, &argc, &argv, &error) || files == NULL ||
      timeout_ms <= 0 || memory_mib <= 0)
    {
      g_printerr ("%s\n", error != NULL ? error->message : "Usage: dc-decode-untrusted FILE…");
      g_ptr_array_unref (paths);
      return 2;
    }

  code = dc_detached_code_new (decode_numbers, NULL, NULL);
  g_object_set (code,
                "max-workers", 2,
                "sandbox", DC_SANDBOX_ALL,
                "memory-limit", (guint64) memory_mib * 1024 * 1024,
                "call-timeout", (guint) timeout_ms,
                "kill-on-cancel", TRUE,
                "setup-flags", DC_SETUP_CAPTURE_STDERR,
                NULL);

  /* The workers may read the directories of the files, and nothing else
   * of the filesystem: absolute paths, as the sandbox wants them. */
  n = g_strv_length (files);
  for (i = 0; i < n; i++)
    {
      char *path = g_canonicalize_filename (files[i], cwd);

      g_hash_table_add (dirs, g_path_get_dirname (path));
      g_ptr_array_add (paths, path);
    }
  g_hash_table_iter_init (&iter, dirs);
  while (g_hash_table_iter_next (&iter, &dir, NULL))
    dc_detached_code_add_sandbox_path (code, dir, DC_SANDBOX_ACCESS_READ);

  if (!dc_detached_code_start (code, &error))
    {
      g_printerr ("Cannot start the sandboxed decoder: %s\n", error->message);
      g_ptr_array_unref (paths);
      return g_error_matches (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED) ? 77 : 1;
    }

  jobs = g_new0 (Job, n);
  for (i = 0; i < n; i++)
    {
      jobs[i].name = files[i];
      dc_detached_code_call_async (code, g_variant_new ("(s)", (char *) paths->pdata[i]),
                                   G_PRIORITY_DEFAULT, NULL, decoded_cb, &jobs[i]);
    }
  jobs_left = n;
  while (jobs_left > 0)
    g_main_context_iteration (NULL, TRUE);

  /* In the order given. */
  for (i = 0; i < n; i++)
    {
      if (jobs[i].error != NULL)
        {
          g_print ("%s: error: %s\n", jobs[i].name, jobs[i].error->message);
          g_error_free (jobs[i].error);
          failed++;
          continue;
        }
      {
        guint32 count;
        gint64 sum, min, max;

        g_variant_get (jobs[i].value, "(uxxx)", &count, &sum, &min, &max);
        g_print ("%s: %u numbers, sum %" G_GINT64_FORMAT ", min %" G_GINT64_FORMAT
                 ", max %" G_GINT64_FORMAT "\n", jobs[i].name, count, sum, min, max);
        g_variant_unref (jobs[i].value);
      }
    }

  g_ptr_array_unref (paths);
  return failed > 0 ? 1 : 0;
}
