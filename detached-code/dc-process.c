/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Processes the pool makes: cloned with a pidfd and no exit signal, and
 * reaped through that pidfd. */

#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dc-process-private.h"

#ifndef P_PIDFD
#define P_PIDFD ((idtype_t) 3)
#endif

/* This process's pid, or 0 where it is to be asked again: in every child,
 * cleared by dc_process_clone() in the processes the library makes, and
 * by a pthread_atfork() handler in those fork() makes.  -1: the handler
 * could not be installed, so nothing is cached. */
static gint self_pid;

/* This function is called between fork() and the user's code (it is the
 * pthread_atfork() child handler, and dc_process_clone() runs it in its
 * children) and hence must be async-signal-safe: one atomic store. */
static void
forget_self_pid (void)
{
  if (g_atomic_int_get (&self_pid) > 0)
    g_atomic_int_set (&self_pid, 0);
}

/* Installed once, when the library is loaded: before any pool exists, so
 * before any pid is cached. */
__attribute__((constructor)) static void
install_fork_handler (void)
{
  if (pthread_atfork (NULL, NULL, forget_self_pid) != 0)
    self_pid = -1;
}

pid_t
dc_process_get_self_pid (void)
{
  gint pid = g_atomic_int_get (&self_pid);

  if (G_LIKELY (pid > 0))
    return (pid_t) pid;

  /* A fork() racing with this store in another thread does not matter:
   * the child has this thread's store undone by its handler, or never
   * sees it. */
  pid = (gint) getpid ();
  if (g_atomic_int_get (&self_pid) == 0)
    g_atomic_int_set (&self_pid, pid);
  return (pid_t) pid;
}

/* This function is called between fork() and the user's code (in the
 * template) and hence must be async-signal-safe: only raw system calls.
 *
 * No exit signal: the kernel reaps a child that signals SIGCHLD to a
 * parent ignoring SIGCHLD, and loses its status; a child with none waits
 * for us.  A sibling inherits its maker's exit signal, so the template,
 * made with none, makes workers with none. */
pid_t
dc_process_clone (gboolean  sibling,
                  int      *pidfd,
                  gint32   *pid_slot)
{
  struct clone_args args;
  long pid;

  memset (&args, 0, sizeof args);
  args.flags = CLONE_PIDFD | (sibling ? CLONE_PARENT : 0);
  args.pidfd = (guint64) (guintptr) pidfd;
  args.exit_signal = 0;
  if (pid_slot != NULL)
    {
      args.flags |= CLONE_PARENT_SETTID;
      args.parent_tid = (guint64) (guintptr) pid_slot;
    }
  pid = syscall (SYS_clone3, &args, sizeof args);

  /* Refused (an old kernel, a container's filter, valgrind): clone()
   * takes the same flags, the pidfd going where the parent's tid would,
   * so the slot is written here, a few instructions later. */
#if defined(__x86_64__) || defined(__aarch64__) || defined(__i386__) || defined(__arm__) || \
    defined(__powerpc64__) || defined(__riscv)
  if (pid < 0 && errno == ENOSYS)
    {
      pid = syscall (SYS_clone, (unsigned long) (args.flags & ~CLONE_PARENT_SETTID), 0UL, pidfd,
                     0UL, 0UL);
      if (pid > 0 && pid_slot != NULL)
        __atomic_store_n (pid_slot, (gint32) pid, __ATOMIC_SEQ_CST);
    }
#endif
  /* No fork() handler ran: the child's pid is asked afresh. */
  if (pid == 0)
    forget_self_pid ();
  return (pid_t) pid;
}

void
dc_process_reap_orphan (pid_t pid)
{
  siginfo_t info;
  int r;

  if (pid <= 0)
    return;
  /* Not a child of ours (exited or not): ECHILD, and hands off. */
  memset (&info, 0, sizeof info);
  do
    r = waitid (P_PID, (id_t) pid, &info, WEXITED | WNOHANG | WNOWAIT | __WALL);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    return;

  /* Unreaped, so the number is still its own. */
  kill (pid, SIGKILL);
  do
    r = waitid (P_PID, (id_t) pid, &info, WEXITED | __WALL);
  while (r < 0 && errno == EINTR);
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: system calls only. */
int
dc_process_signal (int   pidfd,
                   pid_t pid,
                   int   signum)
{
  int r = (int) syscall (SYS_pidfd_send_signal, pidfd, signum, NULL, 0);

  if (r < 0 && errno == ENOSYS && pid > 0)
    r = kill (pid, signum);
  return r;
}

gboolean
dc_process_reap (int       pidfd,
                 gboolean  block,
                 int      *wait_status)
{
  siginfo_t info;
  int r;

  memset (&info, 0, sizeof info);
  do
    r = waitid (P_PIDFD, (id_t) pidfd, &info, WEXITED | __WALL | (block ? 0 : WNOHANG));
  while (r < 0 && errno == EINTR);

  if (r < 0)
    {
      /* Reaped by someone else (a waitpid (-1, __WALL) of the host's): the
       * status is gone. */
      *wait_status = DC_PROCESS_STATUS_UNKNOWN;
      return TRUE;
    }
  if (info.si_pid == 0)
    return FALSE;   /* still running */

  switch (info.si_code)
    {
    case CLD_EXITED:
      *wait_status = (info.si_status & 0xff) << 8;
      break;
    case CLD_DUMPED:
      *wait_status = (info.si_status & 0x7f) | 0x80;
      break;
    case CLD_KILLED:
    default:
      *wait_status = info.si_status & 0x7f;
      break;
    }
  return TRUE;
}

guint
dc_process_count_threads (void)
{
  DIR *dir = opendir ("/proc/self/task");
  struct dirent *entry;
  guint n = 0;

  if (dir == NULL)
    return 0;
  while ((entry = readdir (dir)) != NULL)
    if (entry->d_name[0] != '.')
      n++;
  closedir (dir);
  return n;
}
