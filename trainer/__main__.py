"""``python -m trainer ...``: the command line (``trainer.cli``)."""

import sys

from trainer import startup_gc

if __name__ == "__main__":
    startup_gc.hold()  # before the imports: a process's start-up needs no cyclic collection
    from trainer.cli import main

    sys.exit(main())
