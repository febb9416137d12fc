"""``python -m tools.bench_ingest``: see the package's docstring."""

import sys

from tools.bench_ingest.main import main

if __name__ == "__main__":
    sys.exit(main())
