/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#define DC_INSIDE
# include "dc-version.h"
# include "dc-version-macros.h"
# include "dc-enum-types.h"
# include "dc-detached-code.h"
#undef DC_INSIDE
