/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The worker template (the fork server): a process cloned from the
 * parent at start(), single-threaded, that does nothing but clone workers
 * on request, as siblings (children of the parent).  Workers so see the
 * parent's memory as it was when the template was made, whatever threads
 * and locks the parent has since.
 *
 * A request is one SOCK_SEQPACKET message: a DcTemplateRequest, then the
 * worker's sandbox program (dc-sandbox-private.h, at most
 * DC_SANDBOX_MAX_SIZE bytes), the working directory and the environment, with the worker's channel
 * descriptors attached (SCM_RIGHTS: one for a socket, read then write for
 * pipes).  The reply is a DcTemplateReply, with the worker's pidfd
 * attached when it was made.
 *
 * The encoder runs in the parent; the template's side is async-signal-safe
 * (the template is a copy of a parent that may have had threads), so it
 * decodes in place, allocating nothing. */

#pragma once

#include "dc-worker-private.h"

G_BEGIN_DECLS

#define DC_TEMPLATE_MAGIC        0x44435450u   /* "DCTP" */
/* What one request may hold; the environment is most of it. */
#define DC_TEMPLATE_MAX_REQUEST  (128 * 1024)
#define DC_TEMPLATE_MAX_ENV      4096

typedef struct
{
  guint32 magic;
  guint32 size;              /* of the whole request */
  guint32 setup_flags;       /* DcSetupFlags */
  guint32 marshaller;        /* DcMarshaller */
  guint32 exit_on_die;
  guint32 memfd_threshold;
  guint32 cwd_len;           /* with its NUL; 0: keep the template's */
  guint32 n_env;             /* strings, each with its NUL ... */
  guint32 env_len;           /* ... in this many bytes; 0 and 0: keep */
  guint32 slot;              /* where the worker's pid goes, < DC_TEMPLATE_N_SLOTS */
  guint32 sandbox_len;       /* 0: no sandbox */
  guint32 reserved;
} DcTemplateRequest;

/* The pid slots: a page shared by the parent and its template alone,
 * where the kernel writes each worker's pid as it clones it.  If the
 * template dies before its reply, the parent still learns of the worker
 * (a child of its own, by CLONE_PARENT) and reaps it.  One slot per
 * request in flight. */
#define DC_TEMPLATE_N_SLOTS      8
#define DC_TEMPLATE_SLOTS_SIZE   4096

typedef struct
{
  guint32 magic;
  gint32  pid;               /* > 0: made, its pidfd attached */
  gint32  error;             /* errno when not */
  guint32 reserved;
} DcTemplateReply;

/* What the template needs to know of itself; prepared by the parent. */
typedef struct
{
  int       channel_fd;      /* its end, as numbered in the parent */
  int       channel_target;  /* where it goes in the template */
  DcWorkerSetup targets;     /* dc_worker_pick_targets() at its fork: its
                              * descriptor limit is the parent's then */
  pid_t     parent_pid;
  gboolean  die_with_parent;
  gint32   *slots;           /* DC_TEMPLATE_N_SLOTS, in the shared page */
} DcTemplateSetup;

/* In the parent: the request for a worker with these settings (@cwd,
 * @envp and @sandbox may be NULL).  NULL if it would be larger than
 * DC_TEMPLATE_MAX_REQUEST. */
GBytes   *dc_template_encode_request  (DcSetupFlags          flags,
                                       GBytes               *sandbox,
                                       const char           *cwd,
                                       char                **envp,
                                       DcMarshaller          marshaller,
                                       gboolean              exit_on_die,
                                       guint                 memfd_threshold);

/* In the parent: sets which slot the worker's pid goes to, in a request
 * @dc_template_encode_request made (a copy the caller may write). */
void      dc_template_request_set_slot (guint8              *request,
                                        guint                slot);

/* Async-signal-safe.  Checks @request (@size bytes, which it may write
 * to) and fills @setup and @code from it, pointing into it and into
 * @envp_storage (DC_TEMPLATE_MAX_ENV + 1 entries).  @channel_fds are the
 * descriptors that came with it: the channel's one or two ends, then,
 * when its flags have DC_SETUP_CAPTURE_STDERR, the stderr pipe's write
 * end.  FALSE if it is malformed. */
gboolean  dc_template_decode_request  (guint8               *request,
                                       gsize                 size,
                                       const int            *channel_fds,
                                       guint                 n_channel_fds,
                                       char                **envp_storage,
                                       DcWorkerSetup        *setup,
                                       DcWorkerCode         *code);

/* The template's whole life: serves requests until its channel ends.
 * @code is the worker code as it was when the template was made. */
G_NORETURN
void      dc_template_main            (const DcTemplateSetup *setup,
                                       const DcWorkerCode    *code);

G_END_DECLS
