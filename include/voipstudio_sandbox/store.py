"""The sandbox's state: one SQLite table per History resource, owned by :class:`Store`.

The store knows nothing about HTTP. It answers the questions the API asks (a filtered,
sorted page; one record; deletes and updates with the API's all-or-nothing rules) and keeps
a pristine copy of the seeded data so that a reset is a page copy, not a regeneration.

It is a little over 400 lines because it is one class, the whole state of the emulated
service: splitting its queries from its writes would split one SQLite connection and its
lock between modules.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voipstudio_provider.endpoints import FILTER_OPERATORS, RESOURCES

from voipstudio_sandbox import generate

#: SQLite column types; every other field is TEXT. Booleans are stored as 0/1.
_INTEGER = {
    "id", "billsec", "destination_id", "duration", "live_id", "parent_live_id", "server_id",
    "sip_endpoint_id", "user_id", "size", "media_session_id", "extension_id", "customer_id",
    "operator_id", "website_id", "state", "chat_id", "cdr_id", "channels", "cli_prefix", "flag",
    "target_id", "target_type", "customer", "two_factor_auth", "user", "status_code",
    "nb_notes", "bitrate",
}  # fmt: skip
_REAL = {"charge", "rate", "amount"}
_BOOLEAN = {
    "is_new", "cli_hide", "esc_enabled", "fax_enabled", "has_fax_password", "sms_enabled",
    "tel_verified", "active", "is_initial", "is_root",
}  # fmt: skip
#: Fields stored as given (text or integer): ``call_id`` comes as either. Enumerations are
#: stored as strings and sent in the account's encoding (:func:`generate.served_enumeration`).
_AS_GIVEN = {"type", "disposition", "destination", "call_id"}
#: Bumped when the stored form changes, so that an older database file is regenerated.
SCHEMA_VERSION = "2"
#: Fields holding lists or objects, kept as JSON text.
_JSON = {"labels"}
#: Assumption: properties the service refuses to filter on, answering 400 "Filtration error"
#: (the real service does so for fax ``from``/``to``; these stand in for them).
UNFILTERABLE = {
    "cdrs": ("labels", "metadata", "nb_notes"),
    "monitors": ("labels", "summary", "transcript"),
}
#: Tables beside the resources: notes of CDRs, and what the data was generated from.
NOTE_FIELDS = ("id", "cdr_id", "created_at", "note", "user_id")
_SQL_OPERATORS = {"eq": "=", "like": "LIKE", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class ValidationError(Exception):
    """A request the API refuses with 400; ``errors`` are per-field messages."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or [{"message": message}]


class NotFoundError(Exception):
    """Records that do not exist; ``ids`` names them."""

    def __init__(self, resource: str, ids: list[int]) -> None:
        super().__init__(f"{resource} not found: {', '.join(map(str, ids))}")
        self.resource = resource
        self.ids = ids


def column_type(field: str) -> str:
    if field in _INTEGER:
        return "INTEGER"
    if field in _REAL:
        return "REAL"
    if field in _BOOLEAN:
        return "BOOLEAN"
    if field in _AS_GIVEN:
        return ""  # no affinity: SQLite keeps 2 as 2 and "I" as "I"
    return "TEXT"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_fields(table: str) -> tuple[str, ...]:
    """The reference's fields of ``table``, then those the real records carry beyond them."""
    if table == "notes":
        return NOTE_FIELDS
    return RESOURCES[table].fields + generate.EXTRA_FIELDS.get(table, ())


def _enumerated(table: str) -> tuple[str, ...]:
    return generate.INTEGER_ENUM_FIELDS.get(table, ())


def _stored(table: str, field: str, value: Any) -> Any:
    if field in _enumerated(table):
        return generate.stored_enumeration(field, value)
    return json.dumps(value) if field in _JSON and value is not None else value


def _like_pattern(value: Any) -> str:
    """A substring match of ``value`` as given: ``%`` and ``_`` in it are plain characters."""
    text = str(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{text}%"


class Store:
    """The records of one sandbox account, in SQLite.

    :param path: the database file; ``None`` keeps everything in memory (for tests).
    :param seed: the data seed; an existing file made from another seed or scale is
        regenerated, one made from the same is reused as it is.
    :param scale: multiplies the number of generated records.
    :param now: the end of the generated history (defaults to the current time).
    :param enums: how enumerations are sent, one of :data:`generate.ENUM_ENCODINGS`; the
        attribute may change while the store runs (they are stored as strings).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        seed: int = 1,
        scale: float = 1,
        now: dt.datetime | None = None,
        enums: str = "strings",
    ) -> None:
        if enums not in generate.ENUM_ENCODINGS:
            raise ValueError(f"enums must be one of {', '.join(generate.ENUM_ENCODINGS)}")
        self.enums = enums
        self.seed = seed
        self.scale = scale
        self.path = Path(path) if path is not None else None
        self.lock = threading.RLock()
        #: increases on every reset, so that delayed deletes of an older state do nothing.
        self.epoch = 0
        reuse = (
            self.path is not None and self._same_seed(self.path) and self._pristine_path.exists()
        )
        if self.path is not None and not reuse:
            for stale in (self.path, self._pristine_path):
                stale.unlink(missing_ok=True)
        self.conn = self._connect(self.path)
        if not reuse:
            self._create_tables(self.conn)
            self._load(generate.generate(seed, scale, now))
        self.pristine = self._connect(self._pristine_path if self.path else None)
        if not reuse:
            self.conn.backup(self.pristine)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def _pristine_path(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".pristine")

    def _same_seed(self, path: Path) -> bool:
        if not path.exists():
            return False
        try:
            with sqlite3.connect(path) as conn:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error:
            return False
        return (meta.get("seed"), meta.get("scale"), meta.get("schema")) == (
            str(self.seed),
            str(self.scale),
            SCHEMA_VERSION,
        )

    def _connect(self, path: Path | None) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        # Filters and sorts compare an enumeration as it is sent, which the encoding decides.
        conn.create_function("served_enum", 4, self._served_enum)
        conn.execute("PRAGMA journal_mode=MEMORY" if path is None else "PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        return conn

    def _create_tables(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        for table in (*RESOURCES, "notes"):
            columns = ", ".join(
                f"{_q(f)} {column_type(f)}" + (" PRIMARY KEY" if f == "id" else "")
                for f in table_fields(table)
            )
            conn.execute(f"CREATE TABLE {_q(table)} ({columns})")
            resource = RESOURCES.get(table)
            for index_field in (resource.date_field, resource.owner_field) if resource else ():
                if index_field:
                    conn.execute(
                        f"CREATE INDEX {_q(f'{table}_{index_field}')} "
                        f"ON {_q(table)} ({_q(index_field)})"
                    )
        conn.execute("CREATE INDEX notes_cdr_id ON notes (cdr_id)")

    def _load(self, data: dict[str, list[dict]]) -> None:
        with self.lock:
            self.conn.execute("BEGIN")
            for table, rows in data.items():
                self._insert_rows(table, rows)
            self.conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("seed", str(self.seed)),
                    ("scale", str(self.scale)),
                    ("schema", SCHEMA_VERSION),
                ],
            )
            self.conn.execute("COMMIT")

    def reset(self) -> None:
        """Go back to the generated data; pending delayed deletes are forgotten."""
        with self.lock:
            self.epoch += 1
            self.pristine.backup(self.conn)

    def close(self) -> None:
        with self.lock:
            self.conn.close()
            self.pristine.close()

    # --- reading ------------------------------------------------------------------------

    def _served_enum(self, resource: str, record_id: int, field: str, value: Any) -> Any:
        return generate.served_enumeration(self.seed, self.enums, resource, record_id, field, value)

    def _column(self, resource: str, field: str) -> str:
        """``field`` in SQL, as the API sends it (enumerations in the account's encoding)."""
        if field in _enumerated(resource) and self.enums != "strings":  # stored as strings
            return f"served_enum('{resource}', id, '{field}', {_q(field)})"
        return _q(field)

    def _row(self, table: str, values: tuple) -> dict[str, Any]:
        row = dict(zip(table_fields(table), values, strict=True))
        for field in _enumerated(table):
            row[field] = self._served_enum(table, row["id"], field, row[field])
        for field in _BOOLEAN.intersection(row):
            if row[field] is not None:
                row[field] = bool(row[field])
        for field in _JSON.intersection(row):
            if row[field] is not None:
                row[field] = json.loads(row[field])
        return row

    def parse_filters(self, resource: str, raw: str | list | None) -> list[dict[str, Any]]:
        """Validate a ``filter`` (its JSON text or the decoded list) against ``resource``."""
        if raw in (None, "", []):
            return []
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise ValidationError("filter is not valid JSON") from None
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            raise ValidationError("filter must be a JSON list of conditions")
        fields = table_fields(resource)
        conditions = []
        for entry in raw:
            if not isinstance(entry, dict) or "property" not in entry:
                raise ValidationError("each filter needs property, operator and value")
            prop, operator = entry["property"], entry.get("operator", "eq")
            # The service words every refused filter the same way; errors say which and why.
            if prop not in fields:
                raise ValidationError(
                    "Filtration error",
                    [{"message": f"Unknown property {prop!r}", "property": prop}],
                )
            if operator not in FILTER_OPERATORS:
                raise ValidationError(
                    "Filtration error",
                    [{"message": f"Unsupported operator {operator!r}", "property": prop}],
                )
            if prop in UNFILTERABLE.get(resource, ()):
                raise ValidationError("Filtration error")
            value = entry.get("value")
            if isinstance(value, (list, dict)):
                raise ValidationError(
                    "Filtration error",
                    [{"message": "Value must be a scalar", "property": prop}],
                )
            conditions.append({"property": prop, "operator": operator, "value": value})
        return conditions

    def _where(
        self,
        resource: str,
        filters: list[dict[str, Any]],
        owner: int | None,
        within: tuple[str, list[Any]] | None = None,
    ) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if within is not None:
            field, values = within
            marks = ", ".join("?" for _ in values) or "NULL"
            clauses.append(f"{_q(field)} IN ({marks})")
            params.extend(values)
        for condition in filters:
            value = condition["value"]
            if isinstance(value, bool):
                value = int(value)
            column = self._column(resource, condition["property"])
            if value is None and condition["operator"] == "eq":
                clauses.append(f"{column} IS NULL")
                continue
            if condition["operator"] == "like":
                clauses.append(f"{column} LIKE ? ESCAPE '\\'")
                params.append(_like_pattern(value))
                continue
            operator = _SQL_OPERATORS[condition["operator"]]
            clauses.append(f"{column} {operator} ?")
            params.append(value)
        owner_field = RESOURCES[resource].owner_field
        if owner is not None and owner_field:
            clauses.append(f"{_q(owner_field)} = ?")
            params.append(owner)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list(
        self,
        resource: str,
        *,
        filters: list[dict[str, Any]] | None = None,
        sort: str = "id",
        direction: str = "DESC",
        page: int = 1,
        limit: int = 25,
        owner: int | None = None,
        within: tuple[str, list[Any]] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of ``resource`` and the count of every matching row.

        :param owner: when set, only records whose owner field is this user id.
        :param within: ``(field, values)``: only records whose field is one of the values.
        """
        if sort not in table_fields(resource):
            raise ValidationError(
                f"unknown sort field {sort!r}", [{"message": "Unknown field", "property": sort}]
            )
        if direction.upper() not in ("ASC", "DESC"):
            raise ValidationError("dir must be ASC or DESC", [{"message": "Invalid dir"}])
        where, params = self._where(resource, filters or [], owner, within)
        order = (
            f" ORDER BY {self._column(resource, sort)} {direction.upper()}, id {direction.upper()}"
        )
        with self.lock:
            total = self.conn.execute(f"SELECT COUNT(*) FROM {_q(resource)}{where}", params)
            total = total.fetchone()[0]
            cursor = self.conn.execute(
                f"SELECT * FROM {_q(resource)}{where}{order} LIMIT ? OFFSET ?",
                [*params, limit, (page - 1) * limit],
            )
            rows = [self._row(resource, values) for values in cursor.fetchall()]
        return rows, total

    def iter_batches(
        self,
        resource: str,
        *,
        filters: list[dict[str, Any]] | None = None,
        owner: int | None = None,
        batch: int = 1000,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every matching row by ascending id, a batch per lock, so writers are not blocked."""
        last_id = None
        while True:
            conditions = list(filters or [])
            if last_id is not None:
                conditions.append({"property": "id", "operator": "gt", "value": last_id})
            where, params = self._where(resource, conditions, owner)
            with self.lock:
                cursor = self.conn.execute(
                    f"SELECT * FROM {_q(resource)}{where} ORDER BY id ASC LIMIT ?",
                    [*params, batch],
                )
                rows = [self._row(resource, values) for values in cursor.fetchall()]
            if not rows:
                return
            yield rows
            last_id = rows[-1]["id"]

    def all(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``table`` (a resource or ``notes``) by ascending id."""
        with self.lock:
            cursor = self.conn.execute(f"SELECT * FROM {_q(table)} ORDER BY id ASC")
            return [self._row(table, values) for values in cursor.fetchall()]

    def get(self, table: str, record_id: int) -> dict[str, Any] | None:
        with self.lock:
            values = self.conn.execute(
                f"SELECT * FROM {_q(table)} WHERE id = ?", (record_id,)
            ).fetchone()
        return None if values is None else self._row(table, values)

    def find(self, table: str, field: str, value: Any) -> list[dict[str, Any]]:
        """Rows of ``table`` whose ``field`` equals ``value``, by ascending id."""
        with self.lock:
            cursor = self.conn.execute(
                f"SELECT * FROM {_q(table)} WHERE {_q(field)} = ? ORDER BY id", (value,)
            )
            return [self._row(table, values) for values in cursor.fetchall()]

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                table: self.conn.execute(f"SELECT COUNT(*) FROM {_q(table)}").fetchone()[0]
                for table in (*RESOURCES, "notes")
            }

    def next_id(self, table: str) -> int:
        with self.lock:
            return (self.conn.execute(f"SELECT MAX(id) FROM {_q(table)}").fetchone()[0] or 0) + 1

    # --- writing ------------------------------------------------------------------------

    def _insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        fields = table_fields(table)
        placeholders = ", ".join("?" for _ in fields)
        self.conn.executemany(
            f"INSERT INTO {_q(table)} ({', '.join(map(_q, fields))}) VALUES ({placeholders})",
            [tuple(_stored(table, f, row.get(f)) for f in fields) for row in rows],
        )

    def insert(self, table: str, rows: list[dict[str, Any]]) -> list[int]:
        """Add rows (each carrying its ``id``) in one transaction; return their ids."""
        unknown = {key for row in rows for key in row} - set(table_fields(table))
        if unknown:
            raise ValidationError(f"unknown fields of {table}: {', '.join(sorted(unknown))}")
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                self._insert_rows(table, rows)
            except sqlite3.IntegrityError as error:
                self.conn.execute("ROLLBACK")
                raise ValidationError(f"cannot add {table}: {error}") from None
            self.conn.execute("COMMIT")
        return [row["id"] for row in rows]

    def _missing(self, table: str, ids: list[int]) -> list[int]:
        found: set[int] = set()
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            cursor = self.conn.execute(
                f"SELECT id FROM {_q(table)} WHERE id IN ({', '.join('?' for _ in part)})", part
            )
            found.update(value for (value,) in cursor.fetchall())
        return [i for i in ids if i not in found]

    def delete(self, table: str, ids: list[int]) -> None:
        """Delete every one of ``ids`` or, if any is unknown, none of them."""
        with self.lock:
            missing = self._missing(table, ids)
            if missing:
                raise NotFoundError(table, missing)
            self.conn.execute("BEGIN")
            self.conn.executemany(f"DELETE FROM {_q(table)} WHERE id = ?", [(i,) for i in ids])
            self.conn.execute("COMMIT")

    def delete_all(self, table: str, owner: int | None = None, epoch: int | None = None) -> int:
        """Delete a whole collection (an owner's part of it); skip if reset since ``epoch``."""
        with self.lock:
            if epoch is not None and epoch != self.epoch:
                return 0
            where, params = self._where(table, [], owner)
            cursor = self.conn.execute(f"DELETE FROM {_q(table)}{where}", params)
            return cursor.rowcount

    def update(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Apply partial rows (each with ``id``) all together, or none if an id is unknown."""
        with self.lock:
            missing = self._missing(table, [row["id"] for row in rows])
            if missing:
                raise NotFoundError(table, missing)
            self.conn.execute("BEGIN")
            for row in rows:
                changes = {k: v for k, v in row.items() if k != "id"}
                if not changes:
                    continue
                assignments = ", ".join(f"{_q(k)} = ?" for k in changes)
                self.conn.execute(
                    f"UPDATE {_q(table)} SET {assignments} WHERE id = ?",
                    [*(_stored(table, k, v) for k, v in changes.items()), row["id"]],
                )
            self.conn.execute("COMMIT")
