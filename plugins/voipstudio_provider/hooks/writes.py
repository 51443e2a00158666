"""Changing and deleting records: bulk updates, deletes by id, whole-collection deletes.

:class:`WritesMixin` gathers every request of the hook that changes the account, so the
guards that protect data (ids checked before anything is sent, URLs split below
``MAX_URL_LENGTH``, the ``confirm`` phrase of a whole-collection delete, the ids already
deleted carried on a failure) read in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from voipstudio_provider.endpoints import Shape
from voipstudio_provider.exceptions import VoIPstudioError
from voipstudio_provider.hooks.paths import endpoint_for, path_of, positive_id, url_chunks
from voipstudio_provider.hooks.transport import TransportMixin


class WritesMixin(TransportMixin):
    """Updates and deletes of the History API, sent through the request loop."""

    def update_records(self, resource: str, rows: list[dict[str, Any]]) -> Any:
        """Bulk PATCH of partial records carrying ``id`` (cdrs, voicemessages).

        ``hook.update_records("voicemessages", [{"id": 7, "folder": "Old"}])``
        """
        ep = endpoint_for(resource, Shape.UPDATE)
        rows = list(rows)
        if not rows:
            return None
        for row in rows:
            positive_id(row.get("id") if isinstance(row, dict) else None, "each row's id")
        return self.call(ep.operation, json=rows)

    def delete_records(self, resource: str, ids: Iterable[int]) -> list[int]:
        """Delete records by id; return the ids deleted, ascending.

        The ids go in as few requests as keep each full URL below ``MAX_URL_LENGTH``; each
        request is all-or-nothing. ``hook.delete_records("monitors", [3, 1, 2])``
        """
        ep = endpoint_for(resource, Shape.DELETE_IDS)
        id_list = sorted({positive_id(i) for i in ids})
        self.get_conn()
        deleted: list[int] = []
        for chunk in url_chunks(self.base_url, ep, id_list):
            try:
                self._json(ep, path_of(ep, ids=chunk))
            except VoIPstudioError as error:
                error.deleted_ids = list(deleted)  # type: ignore[attr-defined]
                raise
            deleted.extend(chunk)
        return deleted

    def delete_all(self, resource: str, *, confirm: str) -> int:
        """Delete a whole collection; return the status (202: the rows go shortly after).

        Only runs when ``confirm`` is exactly ``"DELETE ALL <resource>"``:
        ``hook.delete_all("chatmsgs", confirm="DELETE ALL chatmsgs")``
        """
        expected = f"DELETE ALL {resource}"
        if confirm != expected:
            raise ValueError(f"deleting every {resource} record needs confirm={expected!r}")
        ep = endpoint_for(resource, Shape.DELETE_ALL)
        self.get_conn()
        _, status = self._json(ep, path_of(ep))
        return status
