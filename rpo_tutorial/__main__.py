import sys

from rpo_tutorial.cli import main

sys.exit(main())
