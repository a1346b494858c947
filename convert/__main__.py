"""python -m convert, from the checkout (training and conversion are not part of the device install)."""
import sys

from convert.cli import main

sys.exit(main())
