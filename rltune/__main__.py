import sys

from rltune.cli import main

sys.exit(main())
