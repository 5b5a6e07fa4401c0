#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Runs dc-decode-untrusted on generated inputs: a good file, a file it
refuses, and one that makes its decoder crash; checks what it prints."""

import os
import subprocess
import sys
import tempfile


def main():
    program = sys.argv[1]
    with tempfile.TemporaryDirectory() as inputs:
        files = {
            'good.num': 'NUMS 1\n10\n20\n-5\n',
            'other.txt': 'PNG?\n',
            'crash.num': 'NUMS 1\n1\ntwo\n3\n',
        }
        for name, text in files.items():
            with open(os.path.join(inputs, name), 'w') as f:
                f.write(text)
        names = [os.path.join(inputs, n) for n in files]
        run = subprocess.run([program] + names, capture_output=True, text=True,
                             timeout=120)
    sys.stderr.write(run.stderr)
    sys.stdout.write(run.stdout)
    if run.returncode == 77:
        print('# skipped: no Landlock')
        return 77

    good, other, crash = names
    out = run.stdout
    expect = [
        (run.returncode == 1, 'exit status 1 (a file failed), not %d' % run.returncode),
        ('%s: 3 numbers, sum 25, min -5, max 20\n' % good in out, 'the good file decoded'),
        ('%s: error: other.txt: not a NUMS 1 file\n' % other in out, 'the other file refused'),
        ('%s: error: Worker process ' % crash in out, 'the crash reported'),
        ('(Aborted, SIGABRT)' in out, 'the signal named'),
        ('--- last output of worker process ' in out, 'the last output added'),
        ('crash.num: line 3 is not a number: "two"\n' in out, 'the decoder\'s last words'),
        ('assertion failed: (is_number)' in out, 'the failed assertion'),
        ('dc-worker[' in run.stderr and 'decoding "' in run.stderr,
         'the workers\' stderr copied, prefixed'),
    ]
    failed = [what for ok, what in expect if not ok]
    for what in failed:
        print('FAILED: ' + what)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
