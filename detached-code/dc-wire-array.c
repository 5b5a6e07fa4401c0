/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <string.h>

#include "dc-wire-private.h"

/* Serialized GVariant arrays, cut and joined without a GVariant per
 * element: a map's items travel to the workers as slices of the caller's
 * array, and the chunks' results come back as "av" arrays the parent
 * checks (they are a worker's word) and joins.  Nothing here forks, so
 * all of it can be tested and fuzzed in-process.
 *
 * In a worker it runs after the user's init function, like the user's
 * code, so it may allocate; none of it is part of the async-signal-safe
 * set-up in dc-worker.c. */

/* ---- serialized arrays ---- */

void
dc_wire_type_layout (const GVariantType *type,
                     gsize              *fixed_size,
                     gsize              *alignment)
{
  const char *s = g_variant_type_peek_string (type);
  const GVariantType *member;
  gsize align = 1, size = 0, member_size, member_align;
  gboolean fixed = TRUE;

  switch (s[0])
    {
    case 'b': case 'y':
      *fixed_size = 1, *alignment = 1;
      return;
    case 'n': case 'q':
      *fixed_size = 2, *alignment = 2;
      return;
    case 'i': case 'u': case 'h':
      *fixed_size = 4, *alignment = 4;
      return;
    case 'x': case 't': case 'd':
      *fixed_size = 8, *alignment = 8;
      return;
    case 's': case 'o': case 'g':
      *fixed_size = 0, *alignment = 1;
      return;
    case 'v':
      *fixed_size = 0, *alignment = 8;
      return;
    case 'a': case 'm':
      dc_wire_type_layout (g_variant_type_element (type), &member_size, alignment);
      *fixed_size = 0;
      return;
    default:
      break;
    }

  /* A tuple or a dictionary entry: members at their alignment, the whole
   * padded to the largest; the unit tuple takes one byte. */
  g_assert (g_variant_type_is_tuple (type) || g_variant_type_is_dict_entry (type));
  for (member = g_variant_type_first (type); member != NULL; member = g_variant_type_next (member))
    {
      dc_wire_type_layout (member, &member_size, &member_align);
      align = MAX (align, member_align);
      size = (size + member_align - 1) & ~(member_align - 1);
      size += member_size;
      if (member_size == 0)
        fixed = FALSE;
    }
  *alignment = align;
  if (!fixed)
    *fixed_size = 0;
  else if (size == 0)
    *fixed_size = 1;
  else
    *fixed_size = (size + align - 1) & ~(align - 1);
}

gboolean
dc_wire_type_any_bytes_normal (const GVariantType *type)
{
  const char *s = g_variant_type_peek_string (type);
  const GVariantType *member;
  gsize size = 0, fixed, alignment, member_size, member_align;

  if (strchr ("ynqiuxtdh", s[0]) != NULL)
    return TRUE;
  if (s[0] == 'a')
    {
      /* Any multiple of the element's size: checked by the caller. */
      dc_wire_type_layout (g_variant_type_element (type), &fixed, &alignment);
      return fixed > 0 && dc_wire_type_any_bytes_normal (g_variant_type_element (type));
    }
  if (!g_variant_type_is_tuple (type) && !g_variant_type_is_dict_entry (type))
    return FALSE;

  /* A tuple of such members with no padding anywhere (padding must be
   * zero); the unit tuple's byte must be too. */
  for (member = g_variant_type_first (type); member != NULL; member = g_variant_type_next (member))
    {
      dc_wire_type_layout (member, &member_size, &member_align);
      if (member_size == 0 || size % member_align != 0 || !dc_wire_type_any_bytes_normal (member))
        return FALSE;
      size += member_size;
    }
  dc_wire_type_layout (type, &fixed, &alignment);
  return size > 0 && size == fixed;
}

/* How wide the end table of an array of @size bytes is. */
static gsize
offset_size_for (gsize size)
{
  if (size > G_MAXUINT32)
    return 8;
  if (size > G_MAXUINT16)
    return 4;
  if (size > G_MAXUINT8)
    return 2;
  return size > 0 ? 1 : 0;
}

static gsize
read_offset (const guint8 *p,
             gsize         width)
{
  guint64 value = 0;

  /* Little-endian, as GVariant lays it out on every machine we run on;
   * both ends are the same program on the same machine. */
  memcpy (&value, p, width);
  return (gsize) GUINT64_FROM_LE (value);
}

static void
write_offset (guint8 *p,
              gsize   width,
              gsize   value)
{
  guint64 le = GUINT64_TO_LE ((guint64) value);

  memcpy (p, &le, width);
}

static gsize
align_up (gsize pos,
          gsize alignment)
{
  return (pos + alignment - 1) & ~(alignment - 1);
}

gboolean
dc_wire_array_init (DcWireArray        *array,
                    const GVariantType *element_type,
                    const guint8       *data,
                    gsize               size)
{
  gsize last_end, i, prev_end = 0;

  memset (array, 0, sizeof *array);
  array->data = data;
  array->size = size;
  dc_wire_type_layout (element_type, &array->fixed_size, &array->alignment);

  if (array->fixed_size > 0)
    {
      if (size % array->fixed_size != 0)
        return FALSE;
      array->n_elements = array->n = size / array->fixed_size;
      return TRUE;
    }
  if (size == 0)
    return TRUE;

  array->offset_size = offset_size_for (size);
  last_end = read_offset (data + size - array->offset_size, array->offset_size);
  if (last_end > size || (size - last_end) % array->offset_size != 0)
    return FALSE;
  array->n_elements = array->n = (size - last_end) / array->offset_size;
  if (array->n == 0)
    return FALSE;

  /* Each element starts at its alignment after the one before and ends
   * within the bodies: one pass, no allocation. */
  for (i = 0; i < array->n; i++)
    {
      gsize end = read_offset (data + last_end + i * array->offset_size, array->offset_size);

      if (end < align_up (prev_end, array->alignment) || end > last_end)
        return FALSE;
      prev_end = end;
    }
  /* A body's padding must be what GVariant writes: a start past the end
   * of the bodies (the padding of an empty last element) is not. */
  return prev_end == last_end;
}

static gsize
element_end (const DcWireArray *array,
             gsize              i)
{
  gsize last_end;

  if (array->fixed_size > 0)
    return (i + 1) * array->fixed_size;
  last_end = array->size - array->n_elements * array->offset_size;
  return read_offset (array->data + last_end + i * array->offset_size, array->offset_size);
}

void
dc_wire_array_element (const DcWireArray *array,
                       gsize              i,
                       gsize             *start,
                       gsize             *end)
{
  g_assert (i < array->n_elements);

  if (array->fixed_size > 0)
    *start = i * array->fixed_size;
  else
    *start = i == 0 ? 0 : align_up (element_end (array, i - 1), array->alignment);
  *end = element_end (array, i);
}

void
dc_wire_pad (GByteArray *out,
        gsize       base,
        gsize       alignment)
{
  gsize len = out->len;
  gsize padded = base + align_up (len - base, alignment);

  if (padded == len)
    return;
  g_byte_array_set_size (out, padded);
  memset (out->data + len, 0, padded - len);
}

/* The width of the end table of @n elements whose bodies take @body
 * bytes: it depends on the size it makes, table included. */
static gsize
table_width (gsize body,
             gsize n)
{
  if (body + n <= G_MAXUINT8)
    return 1;
  if (body + 2 * n <= G_MAXUINT16)
    return 2;
  if (body + 4 * n <= G_MAXUINT32)
    return 4;
  return 8;
}

void
dc_wire_array_append_ends (GByteArray  *out,
                           gsize        body_start,
                           const gsize *ends,
                           gsize        n)
{
  gsize width = table_width (out->len - body_start, n), i;
  guint8 *p;

  if (n == 0)
    return;
  g_byte_array_set_size (out, out->len + n * width);
  p = out->data + out->len - n * width;
  for (i = 0; i < n; i++, p += width)
    write_offset (p, width, ends[i]);
}

void
dc_wire_array_append_views (GByteArray        *out,
                            const DcWireArray *views,
                            guint              n_views)
{
  gsize body_start = out->len, total = 0, v, i, k, width;
  guint8 *table;

  g_assert (body_start % 8 == 0);

  if (n_views > 0 && views[0].fixed_size > 0)
    {
      for (v = 0; v < n_views; v++)
        g_byte_array_append (out, views[v].data + views[v].first * views[v].fixed_size,
                             views[v].n * views[v].fixed_size);
      return;
    }

  /* The bodies, each view's in one copy at a position of its alignment;
   * then the table, each end moved by where its view landed. */
  for (v = 0; v < n_views; v++)
    {
      const DcWireArray *view = &views[v];
      gsize start, end, last_start, last_end;

      if (view->n == 0)
        continue;
      dc_wire_array_element (view, view->first, &start, &end);
      dc_wire_array_element (view, view->first + view->n - 1, &last_start, &last_end);
      dc_wire_pad (out, body_start, view->alignment);
      g_byte_array_append (out, view->data + start, last_end - start);
      total += view->n;
    }
  if (total == 0)
    return;

  width = table_width (out->len - body_start, total);
  g_byte_array_set_size (out, out->len + total * width);
  table = out->data + out->len - total * width;

  k = 0;   /* where the current view's bodies end, relative to the array */
  for (v = 0; v < n_views; v++)
    {
      const DcWireArray *view = &views[v];
      gsize start, end, landed;

      if (view->n == 0)
        continue;
      dc_wire_array_element (view, view->first, &start, &end);
      landed = align_up (k, view->alignment);
      for (i = view->first; i < view->first + view->n; i++, table += width)
        {
          end = element_end (view, i);
          write_offset (table, width, end - start + landed);
        }
      k = end - start + landed;
    }
}

/* How a result's value is checked, by its type. */
typedef enum
{
  VALUE_ANY_BYTES,     /* any bytes of its fixed size are in normal form */
  VALUE_ANY_ELEMENTS,  /* an array of such: any multiple of their size */
  VALUE_ASK_GLIB,      /* g_variant_is_normal_form() on it */
} ValueCheck;

/* Whether each element of the "av" @array is a variant GLib would read
 * back as sent: zero padding before it; after the last NUL, a type string
 * that is whole and definite (and one the flat marshaller carries, under
 * it); a fixed-size value of its type's size.  *@normal tells whether
 * every value is in normal form, so that the results may be loaded as
 * trusted (GLib 2.74 reaches the children of an untrusted array in time
 * quadratic in their number).  Results of one type come in runs: a type
 * like the one before is not looked at again. */
gboolean
dc_wire_chunk_results_check (const DcWireArray *array,
                             DcMarshaller       marshaller,
                             gboolean          *normal)
{
  char seen[64] = "";
  gsize seen_len = 0, seen_fixed = 0, prev_end = 0, i;
  ValueCheck check = VALUE_ASK_GLIB;

  *normal = TRUE;
  for (i = 0; i < array->n_elements; i++)
    {
      gsize start, end, nul, type_len, fixed, alignment;
      const char *type_string;
      const char *scanned;

      dc_wire_array_element (array, i, &start, &end);
      for (; prev_end < start; prev_end++)
        if (array->data[prev_end] != 0)
          return FALSE;
      prev_end = end;
      for (nul = end; nul > start && array->data[nul - 1] != '\0'; nul--)
        ;
      if (nul == start)
        return FALSE;
      nul--;
      type_string = (const char *) array->data + nul + 1;
      type_len = end - nul - 1;

      /* seen_len 0: nothing remembered (an empty type string is never valid). */
      if (seen_len == 0 || type_len != seen_len || memcmp (type_string, seen, type_len) != 0)
        {
          const GVariantType *type = (const GVariantType *) type_string;

          if (!g_variant_type_string_scan (type_string, type_string + type_len, &scanned) ||
              scanned != type_string + type_len || !g_variant_type_is_definite (type) ||
              (marshaller == DC_MARSHALLER_FLAT && !dc_wire_flat_type_ok (type)))
            return FALSE;
          dc_wire_type_layout (type, &fixed, &alignment);
          seen_fixed = fixed;
          check = VALUE_ASK_GLIB;
          if (dc_wire_type_any_bytes_normal (type))
            {
              check = fixed > 0 ? VALUE_ANY_BYTES : VALUE_ANY_ELEMENTS;
              if (fixed == 0)
                dc_wire_type_layout (g_variant_type_element (type), &seen_fixed, &alignment);
            }
          seen_len = 0;
          if (type_len < sizeof seen)
            {
              memcpy (seen, type_string, type_len);
              seen_len = type_len;
            }
        }

      /* A fixed size that is not its type's is a lie (GLib would copy
       * the whole value to read it as the default one); other values may
       * come from the code as they are. */
      if (check != VALUE_ANY_ELEMENTS && seen_fixed != 0 && nul - start != seen_fixed)
        return FALSE;
      if (check == VALUE_ANY_ELEMENTS && (nul - start) % seen_fixed != 0)
        *normal = FALSE;
      else if (check == VALUE_ASK_GLIB && *normal)
        {
          g_autofree char *type_copy = g_strndup (type_string, type_len);
          g_autoptr(GVariant) value = g_variant_ref_sink (
              g_variant_new_from_data (G_VARIANT_TYPE (type_copy), array->data + start, nul - start,
                                       FALSE, NULL, NULL));

          *normal = g_variant_is_normal_form (value);
        }
    }
  return TRUE;
}

