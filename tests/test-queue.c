/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The queue of waiting calls, in-process: order, removal, and a size at
 * which a linear insertion would not finish in the test's time limit. */

#include "config.h"

#include "dc-call-private.h"

static DcCall *
fake_call (int     priority,
           guint64 serial)
{
  DcCall *call = g_new0 (DcCall, 1);

  call->link.data = call;
  call->priority = priority;
  call->serial = serial;
  return call;
}

/* Lower priorities first, FIFO among equals, whatever the order of
 * arrival; 200 000 calls with random priorities (a linear insertion takes
 * minutes for that, the tree a fraction of a second). */
static void
test_queue_order (void)
{
  const guint n = 200000;
  DcCallQueue queue;
  DcCall *call, *prev = NULL;
  GRand *rand = g_rand_new_with_seed (42);
  guint i, popped = 0;

  dc_call_queue_init (&queue);
  for (i = 0; i < n; i++)
    dc_call_queue_push (&queue, fake_call (g_rand_int_range (rand, -50000, 50000), i));
  g_assert_cmpuint (dc_call_queue_length (&queue), ==, n);

  while ((call = dc_call_queue_pop (&queue)) != NULL)
    {
      if (prev != NULL)
        {
          g_assert_cmpint (prev->priority, <=, call->priority);
          if (prev->priority == call->priority)
            g_assert_cmpuint (prev->serial, <, call->serial);
        }
      g_free (prev);
      prev = call;
      popped++;
    }
  g_free (prev);
  g_assert_cmpuint (popped, ==, n);
  g_assert_cmpuint (dc_call_queue_length (&queue), ==, 0);
  dc_call_queue_clear (&queue);
  g_rand_free (rand);
}

/* A cancelled call leaves from anywhere in the queue; a call sent back
 * from a worker goes before those of its priority that came after it. */
static void
test_queue_remove_and_front (void)
{
  DcCallQueue queue;
  DcCall *calls[6];
  DcCall *call;
  guint i;
  const guint64 expected[] = { 5, 0, 2, 4 };
  guint k = 0;

  dc_call_queue_init (&queue);
  for (i = 0; i < 5; i++)
    {
      calls[i] = fake_call (i % 2 == 0 ? 0 : 10, i);
      dc_call_queue_push (&queue, calls[i]);
    }
  dc_call_queue_remove (&queue, calls[1]);
  dc_call_queue_remove (&queue, calls[3]);
  g_free (calls[1]);
  g_free (calls[3]);
  /* The only call of priority 10 is gone, and with it its place. */
  g_assert_cmpuint (dc_call_queue_length (&queue), ==, 3);

  calls[5] = fake_call (0, 5);
  dc_call_queue_push_front (&queue, calls[5]);
  while ((call = dc_call_queue_pop (&queue)) != NULL)
    {
      g_assert_cmpuint (call->serial, ==, expected[k]);
      g_assert_cmpint (call->where, ==, DC_CALL_QUEUED);
      k++;
      g_free (call);
    }
  g_assert_cmpuint (k, ==, G_N_ELEMENTS (expected));
  dc_call_queue_clear (&queue);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/queue/order", test_queue_order);
  g_test_add_func ("/detached-code/queue/remove-and-front", test_queue_remove_and_front);

  return g_test_run ();
}
