import sys

from descend.cli.main import main

sys.exit(main())
