"""``python -m lstm_embed``: the same command line as ``lstm-embed``."""

import sys

from lstm_embed.cli import main

if __name__ == "__main__":
    sys.exit(main())
