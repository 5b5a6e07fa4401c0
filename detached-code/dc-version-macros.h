/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#if !defined(DC_INSIDE) && !defined(DC_COMPILATION)
#error "Only <detached-code.h> can be included directly."
#endif

#include <glib.h>

#if defined(_WIN32) && !defined(DC_STATIC_BUILD)
# ifdef DC_COMPILATION
#  define _DC_EXPORT __declspec(dllexport) extern
# else
#  define _DC_EXPORT __declspec(dllimport) extern
# endif
#elif defined(__GNUC__)
# define _DC_EXPORT __attribute__((__visibility__("default"))) extern
#else
# define _DC_EXPORT extern
#endif

#define DC_AVAILABLE_IN_ALL _DC_EXPORT
#define DC_AVAILABLE_IN_1_0 _DC_EXPORT
