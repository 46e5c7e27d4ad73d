import sys

from auraseal.cli import main

sys.exit(main())
