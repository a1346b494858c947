"""python -m train, from the checkout (training and conversion are not part of the device install)."""
import sys

from train.cli import main

sys.exit(main())
