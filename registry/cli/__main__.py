"""``python -m p2pz.registry.cli`` runs the ``p2pz`` command line (``python -m p2pz`` does too)."""

from . import main

main()
