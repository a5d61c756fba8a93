"""The benchmarks' own PostgreSQL databases: checked URL, a psycopg2 connection, created if
missing. Each bench refuses SQLite and any database whose name lacks "bench"."""

from __future__ import annotations

import sys


def db_config(url: str, *, bench: str, default_url: str) -> dict:
    """Django's database settings for `url`, or exit with a message naming `bench`."""
    import environ

    if url.split(":", 1)[0].lower().startswith("sqlite"):
        sys.exit(f"{bench} measures PostgreSQL and refuses SQLite: use e.g. {default_url}")
    config = environ.Env.db_url_config(url)
    if "postgresql" not in config["ENGINE"]:
        sys.exit(f"{bench} needs PostgreSQL, not {config['ENGINE']}")
    if "bench" not in config["NAME"]:
        sys.exit(
            f"{bench} writes and empties its tables; it only runs on a database of its own "
            f"named like *bench*, e.g. {default_url}"
        )
    return config


def connect(config: dict, dbname: str | None = None):
    import psycopg2

    return psycopg2.connect(
        dbname=dbname or config["NAME"],
        user=config.get("USER") or None,
        password=config.get("PASSWORD") or None,
        host=config.get("HOST") or None,
        port=config.get("PORT") or None,
    )


def ensure_database(config: dict) -> None:
    """Create the database when it does not exist yet."""
    from psycopg2 import sql

    conn = connect(config, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]])
            if not cur.fetchone():
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
    finally:
        conn.close()
