/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* A map: the items are cut into chunks, each chunk travels as one frame
 * (its items' serialized bytes, sliced without a GVariant per item) and is
 * one call of the pool, with a task of its own; the chunks' replies are
 * joined into the result from their serialized bytes.
 *
 * Everything here but dc_map_run()'s submission runs in the caller's
 * thread-default context, where the chunks' tasks complete: a map needs
 * no lock. */

#include "config.h"

#include <string.h>

#include <glib/gi18n-lib.h>

#include "dc-map-private.h"
#include "dc-wire-private.h"

typedef struct
{
  gint          ref_count;   /* atomic: the caller's, and each chunk task's */
  GTask        *task;        /* the caller's; NULL once completed */
  DcCallGroup  *group;
  gsize         n_items;
  guint         chunk_size;
  guint         n_chunks;
  GVariant    **results;     /* per chunk, its "av", once it came */
  guint8       *done;        /* per chunk */
  guint         first_undone;
  gsize         joined_bytes; /* the most the results take, joined */
  /* The failure of the lowest item so far, and its chunk. */
  GError       *failure;
  gsize         failure_index;
  guint         failure_chunk;
} DcMap;

/* Joined results live in one GByteArray, whose length is a guint: past
 * it GLib aborts the process.  Lowered by the tests. */
static gsize max_joined = G_MAXUINT;

void
dc_map_set_max_joined (gsize max_bytes)
{
  max_joined = MIN (max_bytes, (gsize) G_MAXUINT);
}

static DcMap *
map_ref (DcMap *map)
{
  g_atomic_int_inc (&map->ref_count);
  return map;
}

static void
map_drop_results (DcMap *map)
{
  guint i;

  for (i = 0; i < map->n_chunks; i++)
    g_clear_pointer (&map->results[i], g_variant_unref);
}

static void
map_unref (DcMap *map)
{
  if (!g_atomic_int_dec_and_test (&map->ref_count))
    return;
  g_assert (map->task == NULL);
  map_drop_results (map);
  g_free (map->results);
  g_free (map->done);
  g_clear_error (&map->failure);
  dc_call_group_unref (map->group);
  g_free (map);
}

/* The results in item order, from the chunks' serialized bytes: one copy
 * of each chunk's results and one end rewritten per item. */
static GVariant *
map_join (DcMap *map)
{
  g_autofree DcWireArray *views = g_new (DcWireArray, map->n_chunks);
  g_autoptr(GByteArray) out = NULL;
  g_autoptr(GBytes) bytes = NULL;
  gsize reserve = 0;
  guint i;

  for (i = 0; i < map->n_chunks; i++)
    {
      GVariant *chunk = map->results[i];
      gboolean framed;

      /* Checked when the reply came. */
      framed = dc_wire_array_init (&views[i], G_VARIANT_TYPE_VARIANT, g_variant_get_data (chunk),
                                   g_variant_get_size (chunk));
      g_assert (framed);
      reserve += g_variant_get_size (chunk) + 8;
    }
  /* Room for the widest table: the pages are touched only if needed. */
  out = g_byte_array_sized_new ((guint) MIN (reserve + 8 * map->n_items, (gsize) G_MAXUINT));
  dc_wire_array_append_views (out, views, map->n_chunks);
  map_drop_results (map);

  bytes = g_byte_array_free_to_bytes (g_steal_pointer (&out));
  /* Trusted when every value was found in normal form: GLib 2.74 reaches
   * each child of an untrusted array in time that grows with its index. */
  return g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE ("av"), bytes,
                                                       !g_atomic_int_get (&map->group->untrusted)));
}

static void
map_complete (DcMap    *map,
              GVariant *value,
              GError   *error)
{
  g_autoptr(GTask) task = g_steal_pointer (&map->task);

  map_drop_results (map);
  if (value != NULL)
    g_task_return_pointer (task, value, (GDestroyNotify) g_variant_unref);
  else
    g_task_return_error (task, error);
}

static gsize
chunk_start (DcMap *map,
             guint  chunk)
{
  return (gsize) chunk * map->chunk_size;
}

/* Each chunk's task, in the caller's context. */
static void
chunk_done_cb (GObject      *source,
               GAsyncResult *result,
               gpointer      data)
{
  DcMap *map = data;
  guint chunk = GPOINTER_TO_UINT (g_task_get_task_data (G_TASK (result)));
  GError *error = NULL;
  GVariant *value = g_task_propagate_pointer (G_TASK (result), &error);
  GCancellable *cancellable;
  gsize index;

  map->done[chunk] = TRUE;
  if (map->task == NULL)
    {
      /* Completed already: a later chunk, or one sent before a failure. */
      g_clear_pointer (&value, g_variant_unref);
      g_clear_error (&error);
      map_unref (map);
      return;
    }

  cancellable = g_task_get_cancellable (map->task);
  if (value != NULL)
    {
      map->results[chunk] = value;
      /* As map_join() reserves: the bodies, their padding, the table. */
      map->joined_bytes += g_variant_get_size (value) + 8 +
                           8 * MIN (map->chunk_size, map->n_items - chunk_start (map, chunk));
      if (map->joined_bytes > max_joined)
        {
          g_autofree char *limit = g_format_size (max_joined);

          map_complete (map, NULL,
                        g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                                     _("The map’s results, joined, would exceed %s"), limit));
          map_unref (map);
          return;
        }
    }
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED) &&
           cancellable != NULL && g_cancellable_is_cancelled (cancellable))
    {
      /* The caller's cancellation: at once, whatever else is due. */
      map_complete (map, NULL, error);
      map_unref (map);
      return;
    }
  else
    {
      /* The lowest failing item wins; a chunk that failed as a whole (its
       * worker died, its time ran out) fails at its first item. */
      index = chunk_start (map, chunk);
      if (map->group->failed_at[chunk] != G_MAXUINT)
        index += map->group->failed_at[chunk];
      if (map->failure == NULL || index < map->failure_index)
        {
          g_clear_error (&map->failure);
          map->failure = g_steal_pointer (&error);
          map->failure_index = index;
          map->failure_chunk = chunk;
        }
      g_clear_error (&error);
    }

  while (map->first_undone < map->n_chunks && map->done[map->first_undone])
    map->first_undone++;

  /* A failure decides once every chunk before its own has come. */
  if (map->failure != NULL && map->first_undone > map->failure_chunk)
    map_complete (map, NULL, g_steal_pointer (&map->failure));
  else if (map->failure == NULL && map->first_undone == map->n_chunks)
    map_complete (map, map_join (map), NULL);
  map_unref (map);
}

/* Why @items cannot be mapped by this pool, or NULL. */
static GError *
map_check (DcPool   *pool,
           GVariant *items)
{
  const GVariantType *element;

  if (!g_variant_is_of_type (items, G_VARIANT_TYPE_ARRAY))
    return g_error_new (G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        _("A map takes an array of argument tuples, not a value of type “%s”"),
                        g_variant_get_type_string (items));
  element = g_variant_type_element (g_variant_get_type (items));

  /* A chunk carries no descriptors, and an `h` is an index into them. */
  if (dc_launcher_takes_fds (dc_pool_get_launcher (pool)))
    return g_error_new_literal (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                                _("A map carries no descriptors, and this pool's code takes them: "
                                  "use calls"));
  if (strchr (g_variant_type_peek_string (element), 'h') != NULL)
    return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                        _("A map carries no descriptors, so its items cannot hold handles (“%s”)"),
                        g_variant_get_type_string (items));
  if (dc_pool_get_settings (pool)->proc.marshaller == DC_MARSHALLER_FLAT &&
      !dc_wire_flat_type_ok (element))
    {
      GError *error = NULL;
      g_autofree char *type_string = g_variant_type_dup_string (element);

      dc_wire_set_marshal_error (&error, DC_WIRE_MARSHAL_BAD_TYPE, type_string);
      return error;
    }
  return NULL;
}

/* The bytes of @view's elements, together. */
static gsize
view_size (const DcWireArray *view)
{
  gsize start, end, last_start, last_end;

  if (view->fixed_size > 0)
    return view->n * view->fixed_size;
  dc_wire_array_element (view, view->first, &start, &end);
  dc_wire_array_element (view, view->first + view->n - 1, &last_start, &last_end);
  return last_end - start;
}

/* The frame of each chunk: the items' serialized bytes, sliced.  NULL
 * with @error if one would be too large to travel. */
static GPtrArray *
map_make_payloads (DcMap             *map,
                   const DcWireArray *all,
                   const char        *type_string,
                   GError           **error)
{
  GPtrArray *payloads = g_ptr_array_new_full (map->n_chunks, (GDestroyNotify) g_bytes_unref);
  guint chunk;

  for (chunk = 0; chunk < map->n_chunks; chunk++)
    {
      g_autoptr(GByteArray) out = g_byte_array_new ();
      DcWireArray view = *all;
      gboolean too_large;

      view.first = chunk_start (map, chunk);
      view.n = MIN (map->chunk_size, map->n_items - view.first);
      /* Checked before the copy too: a GByteArray takes a guint length,
       * so a chunk past 4 GiB would be cut short, not refused. */
      too_large = view_size (&view) > DC_WIRE_MAX_PAYLOAD;
      if (!too_large)
        {
          dc_wire_append_variant_head (out, type_string);
          dc_wire_array_append_views (out, &view, 1);
          too_large = out->len > DC_WIRE_MAX_PAYLOAD;
        }
      if (too_large)
        {
          dc_wire_set_marshal_error (error, DC_WIRE_MARSHAL_TOO_LARGE, type_string);
          g_ptr_array_unref (payloads);
          return NULL;
        }
      g_ptr_array_add (payloads, g_byte_array_free_to_bytes (g_steal_pointer (&out)));
    }
  return payloads;
}

/* The chunks' calls, the first holding the others as its batch. */
static DcCall *
map_make_calls (DcMap     *map,
                GTask     *task,
                GPtrArray *payloads)
{
  DcCall *first = NULL;
  guint chunk;

  for (chunk = 0; chunk < map->n_chunks; chunk++)
    {
      GTask *chunk_task = g_task_new (g_task_get_source_object (task), g_task_get_cancellable (task),
                                      chunk_done_cb, map_ref (map));
      DcCall *call;

      g_task_set_source_tag (chunk_task, g_task_get_source_tag (task));
      g_task_set_priority (chunk_task, g_task_get_priority (task));
      g_task_set_task_data (chunk_task, GUINT_TO_POINTER (chunk), NULL);
      call = dc_call_new (chunk_task, g_bytes_ref (g_ptr_array_index (payloads, chunk)), NULL,
                          g_task_get_priority (task));
      dc_call_set_chunk (call, map->group, chunk,
                         (guint) MIN (map->chunk_size, map->n_items - chunk_start (map, chunk)));
      if (first == NULL)
        first = call;
      else
        {
          if (first->batch == NULL)
            first->batch = g_queue_new ();
          g_queue_push_tail_link (first->batch, &call->link);
        }
    }
  return first;
}

void
dc_map_run (DcPool   *pool,
            GTask    *task,
            GVariant *items_in,
            guint     chunk_size)
{
  g_autoptr(GVariant) items = items_in;
  g_autoptr(GVariant) normal = NULL;
  g_autoptr(GError) error = NULL;
  DcPoolSettings *settings = dc_pool_get_settings (pool);
  const char *type_string;
  DcWireArray all;
  gboolean framed;
  GPtrArray *payloads;
  DcCall *first;
  DcMap *map;
  guint workers;

  error = map_check (pool, items);
  if (error != NULL)
    {
      g_task_return_error (task, g_steal_pointer (&error));
      g_object_unref (task);
      return;
    }

  /* The workers read the items as trusted: they travel in normal form.
   * (For a value GLib made or was told to trust, this costs nothing.) */
  if (!g_variant_is_normal_form (items))
    {
      normal = g_variant_get_normal_form (items);
      g_variant_unref (items);
      items = g_steal_pointer (&normal);
    }
  type_string = g_variant_get_type_string (items);
  framed = dc_wire_array_init (&all, g_variant_type_element (g_variant_get_type (items)),
                               g_variant_get_data (items), g_variant_get_size (items));
  g_assert (framed);

  if (all.n_elements == 0)
    {
      g_task_return_pointer (task, g_variant_ref_sink (g_variant_new_array (G_VARIANT_TYPE_VARIANT,
                                                                            NULL, 0)),
                             (GDestroyNotify) g_variant_unref);
      g_object_unref (task);
      return;
    }
  if (all.n_elements > G_MAXINT)
    {
      dc_wire_set_marshal_error (&error, DC_WIRE_MARSHAL_TOO_LARGE, type_string);
      g_task_return_error (task, g_steal_pointer (&error));
      g_object_unref (task);
      return;
    }

  /* As multiprocessing.Pool.map chooses: four chunks per worker. */
  workers = MAX (MAX (settings->min_workers, settings->max_workers), 1);
  if (chunk_size == 0)
    chunk_size = (guint) MAX ((all.n_elements + 4 * (gsize) workers - 1) / (4 * (gsize) workers), 1);

  map = g_new0 (DcMap, 1);
  map->ref_count = 1;
  map->task = task;
  map->n_items = all.n_elements;
  map->chunk_size = chunk_size;
  map->n_chunks = (guint) ((all.n_elements + chunk_size - 1) / chunk_size);
  map->group = dc_call_group_new (map->n_chunks);
  map->results = g_new0 (GVariant *, map->n_chunks);
  map->done = g_new0 (guint8, map->n_chunks);

  payloads = map_make_payloads (map, &all, type_string, &error);
  if (payloads == NULL)
    {
      map_complete (map, NULL, g_steal_pointer (&error));
      map_unref (map);
      return;
    }

  /* One submission: all chunks are queued, or all refused. */
  first = map_make_calls (map, task, payloads);
  g_ptr_array_unref (payloads);
  map_unref (map);
  dc_pool_call (pool, first);
}
