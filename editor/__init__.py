"""pix2pix-zero editor (DESIGN §6): captioning, regularized DDIM inversion, cross-attention guidance.

Reads directions through :mod:`registry`/:mod:`store` and loads models through :mod:`registry.loader`.
Built in issue #4; this package holds nothing yet.
"""
