"""``python -m handlers.schemas [--check]``."""

import sys

from handlers.schemas import main

sys.exit(main())
