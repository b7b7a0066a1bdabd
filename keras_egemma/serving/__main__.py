"""`python -m keras_egemma.serving`: the server alone (as `keras-egemma serve`)."""

import sys

from keras_egemma.serving.command import main

sys.exit(main())
