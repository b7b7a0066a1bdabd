import sys

from keras_egemma.cli import main

sys.exit(main())
