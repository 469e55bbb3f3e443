"""Database reads and writes, one module per resource; routers call these, never raw SQL.

Functions take the request's ``Session``, raise ``detlite.errors`` (NotFound, Conflict, ...)
for the error handlers to turn into the JSON error shape, and leave committing to the caller
unless their name says otherwise.
"""
