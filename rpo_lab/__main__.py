import sys

from rpo_lab.cli import main

sys.exit(main())
