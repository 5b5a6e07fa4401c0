# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Makes PyGObject load the Dc overrides of this source tree, ahead of any
# installed copy.  Import it before gi.repository.Dc.

import os

import gi.overrides

# PyGObject finds gi.overrides.Dc along gi.overrides.__path__ (extended with
# pkgutil from sys.path, after its own directory): put ours first.
DIRECTORY = os.path.abspath(
    os.environ.get('DC_PYTHON_OVERRIDES') or
    os.path.join(os.path.dirname(os.path.abspath(__file__)),
                 '..', '..', 'bindings', 'python', 'gi', 'overrides'))

if DIRECTORY not in gi.overrides.__path__:
    gi.overrides.__path__.insert(0, DIRECTORY)
