"""Postgres connection URLs. The embedded server's URL names a passfile in its query, so a URL
for another database on the same server is made by replacing the path, never by cutting the
text at its last slash. A password never goes into a child process's arguments (every user
sees those through `ps`) nor into printed text: `without_password` hands it over for
PGPASSWORD, and `masked` hides it in every DSN form."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

SECRET_PARAMETERS = ("password", "sslpassword")
# key=value, with the value quoted or running to the next space (or & in a URL query)
_KEY_VALUE_SECRET = re.compile(
    r"\b(" + "|".join(SECRET_PARAMETERS) + r")(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)",
    re.IGNORECASE,
)
_URL = re.compile(r"postgres(?:ql)?://[^\s'\"]+")


def with_database(url: str, database: str) -> str:
    """The same server, login and options, another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(database, safe="")))


def database_of(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def without_password(url: str) -> tuple[str, dict[str, str]]:
    """The URL with no password in it, and the environment that carries the password to a
    libpq child process instead (PGPASSWORD, PGSSLPASSWORD)."""
    parts = urlsplit(url)
    env: dict[str, str] = {}
    netloc = parts.netloc
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        userinfo, _, host = netloc.rpartition("@")
        netloc = userinfo.split(":", 1)[0] + "@" + host
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in SECRET_PARAMETERS:
            env["PG" + key.upper()] = value
        else:
            query.append((key, value))
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query))), env


def masked(text: str) -> str:
    """`text` with the password of every DSN in it replaced by ***: URL userinfo, URL query
    parameters and key=value strings."""
    text = _URL.sub(lambda m: _masked_url(m.group(0)), text)
    return _KEY_VALUE_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def _masked_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = userinfo.split(":", 1)[0] + ":***@" + host
    query = "&".join(
        f"{key}=***" if key.lower() in SECRET_PARAMETERS else f"{key}={value}"
        for key, _, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
