"""``python -m curlrl.cli`` runs the ``curlrl`` command."""
import sys

from curlrl.cli import main

sys.exit(main())
