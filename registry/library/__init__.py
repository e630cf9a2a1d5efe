"""The registry itself: banks, encoding, directions, search, students, previews and the `Registry` facade (`api.py`)."""
