import sys

from tlcore.bench.cli import main

sys.exit(main())
