"""``python -m p2pz`` runs the ``p2pz`` command line."""

from p2pz.registry.cli import main

main(prog_name="p2pz")
