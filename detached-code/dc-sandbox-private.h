/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The sandbox of a worker: built once in the parent, per settings, into
 * one flat program (a seccomp BPF filter made by libseccomp, the Landlock
 * rules, the memory limit), which travels to the worker as bytes (in the
 * template's request, or in the parent's memory that a directly forked
 * worker inherits).  The worker applies it after its init function,
 * before the first call, with raw system calls only.
 *
 * The program:
 *
 *   DcSandboxHeader
 *   n_insns × struct sock_filter   the seccomp filter (none: no seccomp)
 *   n_paths × { guint32 access, guint32 len, len bytes with the NUL }
 *                                  Landlock rules, each padded to 4 bytes
 *
 * NO_PROCESS_ACCESS compares system call arguments with the worker's own
 * pid, which the parent cannot know when it builds the filter: the rules
 * compare with DC_SANDBOX_SELF_PID, a number no pid can be (pids stay
 * below 2^22), and the worker writes its pid over that number in its copy
 * of the program before it loads it.  The parent checks that the number
 * appears nowhere else. */

#pragma once

#include "dc-detached-code.h"

G_BEGIN_DECLS

/* Bounds the program: BPF_MAXINSNS instructions and the paths. */
#define DC_SANDBOX_MAX_SIZE   (64 * 1024)
#define DC_SANDBOX_MAX_PATHS  64
#define DC_SANDBOX_SELF_PID   0x7ffffff1u
#define DC_SANDBOX_MAGIC      0x44435342u   /* "DCSB" */

typedef struct
{
  guint32 magic;
  guint32 flags;               /* DcSandboxFlags */
  guint32 n_insns;
  guint32 n_paths;
  guint64 memory_limit;        /* RLIMIT_AS; 0: none */
  guint64 landlock_handled;    /* the access rights the ruleset handles */
} DcSandboxHeader;

typedef struct
{
  char            *path;
  DcSandboxAccess  access;
} DcSandboxPath;

void      dc_sandbox_path_clear    (DcSandboxPath   *path);

/* In the parent: the program for these settings, or NULL with @error
 * (DC_DETACHED_CODE_ERROR_SANDBOX; G_IO_ERROR_NOT_SUPPORTED when
 * DC_SANDBOX_FILESYSTEM is asked of a kernel without Landlock).  With no
 * flag and no limit, an empty program is still returned. */
GBytes   *dc_sandbox_build         (DcSandboxFlags   flags,
                                    GArray          *paths,
                                    guint64          memory_limit,
                                    GError         **error);

/* Async-signal-safe: whether @size bytes at @data are a whole program
 * (what came in a template request). */
gboolean  dc_sandbox_check         (const guint8    *data,
                                    gsize            size);

/* In a worker, after its init function.  Async-signal-safe.  Applies the
 * program, writing the worker's pid into it; from then on, a forbidden
 * system call makes the worker report it on @channel_fd and _exit().
 * Returns 0, or an errno. */
int       dc_sandbox_apply         (guint8          *data,
                                    gsize            size,
                                    int              channel_fd);

/* In the parent: the name of a system call a worker reported, such as
 * "execve", or NULL. */
char     *dc_sandbox_syscall_name  (guint32          arch,
                                    gint32           nr);

G_END_DECLS
