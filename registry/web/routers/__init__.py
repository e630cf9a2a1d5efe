"""The API's routers, one per resource (directions, search, banks, library, jobs, files, students) and the HTML
pages."""
