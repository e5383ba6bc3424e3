"""`python -m coffeebus`: the same as the `coffeebus` command."""

import sys

from coffeebus.cli import main

sys.exit(main())
