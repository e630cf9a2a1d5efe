"""``python -m registry.cli`` runs the ``p2pz`` command line."""

from . import main

main()
