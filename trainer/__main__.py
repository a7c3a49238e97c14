"""``python -m trainer ...``: the command line (``trainer.cli``)."""

import sys

from trainer import startup_gc

if __name__ == "__main__":
    startup_gc.hold()  # before the imports: a process's start-up needs no cyclic collection
    from trainer.quiet_libraries import quiet_libraries

    quiet_libraries()  # before the imports too: some say their piece as they load
    from trainer.cli import main

    sys.exit(main())
