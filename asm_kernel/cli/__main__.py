"""``python -m asm_kernel.cli``: the ``asm`` command."""

import sys

from . import main

sys.exit(main())
