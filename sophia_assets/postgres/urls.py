"""Postgres connection URLs. The embedded server's URL names a passfile in its query, so a URL
for another database on the same server is made by replacing the path, never by cutting the
text at its last slash."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit


def with_database(url: str, database: str) -> str:
    """The same server, login and options, another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(database, safe="")))


def database_of(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))
