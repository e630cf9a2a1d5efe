"""The ground floor: the database and its records, vectors, the search index, files, hashes and progress bars."""
