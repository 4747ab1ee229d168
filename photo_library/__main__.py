import sys

from photo_library.cli import main

sys.exit(main())
