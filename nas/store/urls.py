"""Storage URLs: the error a URL that cannot be opened raises, its password hidden in anything shown,
the SQLite file it names, and the read-only forms of that file's URL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nas.errors import SettingError


DEFAULT_STORAGE = "sqlite:///studies/mnist.db"  # where a search keeps its studies unless told


class StorageError(SettingError):
    """The storage URL cannot be opened; the message never shows a password."""

    def __init__(self, message: str) -> None:
        super().__init__("storage", message)


SECRET_KEY = re.compile(r"pass|pwd|secret|token|credential|api_?key", re.IGNORECASE)


def _parsed(url: str) -> Any:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy knows
        return None


_RAW_AT = re.compile(r"^([A-Za-z][\w+.-]*://[^:/@\s]*):([^/\s]*@[^/\s]*)@([^/@\s]*)")


def raw_at_password(url: str) -> str | None:
    """The password of ``user:p@ss@host``: a raw '@' in it, which SQLAlchemy parses as part of the host
    (it showed "ss@host" as if not secret). Everything up to the last '@' before the host is userinfo."""
    m = _RAW_AT.match(url)
    return m.group(2) if m else None


def secrets_of(url: str) -> list[str]:
    """Every secret a storage URL holds, in each form SQLAlchemy accepts it: the password of
    ``user:password@``, and the value of any query key that names one (``?password=``,
    ``sslpassword``, ``token``, ...)."""
    raw = raw_at_password(url)
    parsed = _parsed(url)
    if raw is not None or parsed is None:
        return ([raw] if raw else []) + [m.group(2) for m in _SECRET_PAIR.finditer(url)]
    found = [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if SECRET_KEY.search(key):
            found += [value] if isinstance(value, str) else list(value)
    return [str(v) for v in found if v]


_SECRET_PAIR = re.compile(r"((?:[\w.-]*(?:pass|pwd|secret|token|credential|api_?key)[\w.-]*))=([^&\s'\"]+)", re.IGNORECASE)
_USERINFO = re.compile(r"(://[^:/@\s]*):([^@\s]+)@")
_URL = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"]+")


def redact(url: str) -> str:
    """The URL with every secret replaced by ***, for every message, header, record and file."""
    if raw_at_password(url) is not None:
        url = _RAW_AT.sub(r"\1:***@\3", url)
    parsed = _parsed(url)
    if parsed is None:  # not a URL SQLAlchemy reads: hide what looks like a secret all the same
        return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}=***", _USERINFO.sub(r"\1:***@", url))
    if parsed.password:
        parsed = parsed.set(password="***")
    secret_keys = [k for k in parsed.query if SECRET_KEY.search(k)]
    if secret_keys:
        parsed = parsed.update_query_dict({k: "***" for k in secret_keys})
    if not (parsed.password or secret_keys):
        return url
    return parsed.render_as_string(hide_password=False).replace("%2A%2A%2A", "***")


def redact_text(text: str, *urls: str) -> str:
    """A text (a command line, a message) with its secrets hidden: every URL in it redacted, every
    ``password=...``-like pair, and each secret of ``urls`` wherever else it appears (a driver's
    message may quote one)."""
    text = _URL.sub(lambda m: redact(m.group(0)), text)
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}=***", text)
    from urllib.parse import quote, quote_plus

    for url in urls:
        for secret in secrets_of(url):
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                text = text.replace(form, "***")
    return text


SQLITE_URL_KEYS = {"timeout", "check_same_thread", "isolation_level", "detect_types", "cached_statements"}


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, resolved (two spellings of one file agree). A ``?``
    in a path must be written ``%3F``: a raw one starts the URL's options and would cut the path."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    from urllib.parse import parse_qsl

    options = url.partition("?")[2]
    try:
        keys = {key for key, _ in parse_qsl(options, strict_parsing=True)} if options else set()
    except ValueError:
        keys = {options}
    if not keys <= SQLITE_URL_KEYS:
        raise StorageError(f"{redact(url)}: {', '.join(sorted(keys - SQLITE_URL_KEYS))!r} after '?' is not an option "
                           "of SQLite's; a '?' in the database's path must be written %3F (and a '%' as %25)")
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve()


def _file_uri(path: Path) -> str:
    """SQLite's URI of a file: the path percent-encoded, since in a URI '#' and '?' end it and '%' starts
    an escape (a folder named ``run#3`` would otherwise open ``run``)."""
    from urllib.parse import quote

    return f"file:{quote(str(path))}"


def read_only_uri(path: Path) -> str:
    """The URI that opens the SQLite file ``path`` read-only (``sqlite3.connect(..., uri=True)``)."""
    return f"{_file_uri(path)}?mode=ro"


def read_only_url(path: Path) -> str:
    """The same as a SQLAlchemy URL (which decodes the URL once, so it is encoded once more here)."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=_file_uri(path), query={"mode": "ro", "uri": "true"}).render_as_string()
