#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""check-quoted.py PAGE SNIPPET...: fails unless PAGE quotes every SNIPPET
file whole, in one fenced code block, so the page shows what the tests
build and run."""

import re
import sys

page = open(sys.argv[1], encoding='utf-8').read()
blocks = [b.strip('\n') for b in re.findall(r'^```[a-z]*\n(.*?)^```$', page, re.M | re.S)]
missing = [path for path in sys.argv[2:]
           if open(path, encoding='utf-8').read().strip('\n') not in blocks]
for path in missing:
    print('%s does not quote %s as it is' % (sys.argv[1], path))
sys.exit(1 if missing else 0)
