"""The API's routers, one per resource (directions, search, banks, library, jobs, files) and the HTML pages."""
