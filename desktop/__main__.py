"""``python -m desktop`` runs Sandstorm."""

import sys

from desktop.app import main

sys.exit(main())
