"""The shapes world and its model (architecture §12): the world, the model's loader, its trainer."""
