"""Live reports: a small web server (`dw reports serve`) that runs the report SQL over the current silver tables
per client and for the portfolio, cached per Delta table version, behind per-client tokens.

`auth` keeps the hashed tokens, `filters` reads the filters a report's SQL declares, `cache` knows the silver
versions and runs a report only when they changed, `pages` renders HTML, `app` wires it into Starlette.
"""
