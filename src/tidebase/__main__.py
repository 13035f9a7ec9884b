"""`python -m tidebase` runs the command line."""

from __future__ import annotations

import sys

from tidebase.cli.main import main

sys.exit(main())
