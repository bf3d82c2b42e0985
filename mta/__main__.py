"""
C{python -m mta ...} is the C{mta} admin command.
"""

import sys

from mta.admin import main

sys.exit(main())
