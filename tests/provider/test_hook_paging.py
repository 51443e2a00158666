"""Walking collections: keyset paging that neither skips nor repeats, date windows, counts."""

from __future__ import annotations

import datetime as dt
import json
import math
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from voipstudio_provider.endpoints import MAX_PAGE_SIZE, Filter, parse_api_datetime


def _query(entry) -> dict:
    query = entry["query"]
    if isinstance(query, str):
        return {k: v[0] for k, v in parse_qs(query).items()}
    return query


def test_walk_yields_every_record_once_in_id_order(hook, truth, api_requests):
    expected = [r["id"] for r in truth("cdrs")]
    walked = [r["id"] for r in hook.iter_records("cdrs", page_size=50)]
    assert walked == expected
    pages = api_requests("/cdrs")
    # The page holding all the rows left (its "total") is the last: no empty page after it.
    assert len(pages) == math.ceil(len(expected) / 50)
    first, second = _query(pages[0]), _query(pages[1])
    assert first["sort"] == "id" and first["dir"] == "ASC" and first["limit"] == "50"
    assert json.loads(second["filter"]) == [
        {"property": "id", "operator": "gt", "value": expected[49]}
    ]


def test_walk_survives_rows_added_and_deleted_between_pages(hook, make_hook, sandbox, truth):
    before = [r["id"] for r in truth("monitors")]
    other = make_hook(conn_id="voipstudio_other")
    seen: list[int] = []
    deleted_ahead: list[int] = []
    added: list[int] = []
    for monitor in hook.iter_records("monitors", page_size=10):
        seen.append(monitor["id"])
        if len(seen) == 10:  # between the first and second page
            deleted_behind = seen[:3]
            deleted_ahead = before[15:18]
            other.delete_records("monitors", deleted_behind + deleted_ahead)
            added = sandbox.control("POST", "records/monitors", {"count": 4})["ids"]
    assert len(seen) == len(set(seen)), "a record came twice"
    assert seen == sorted(seen)
    assert not set(seen) & set(deleted_ahead)
    assert set(added) <= set(seen)
    assert set(before) - set(deleted_ahead) <= set(seen)


def test_since_inclusive_until_exclusive_on_the_date_field(hook, truth):
    cdrs = truth("cdrs")
    days = sorted(parse_api_datetime(c["calldate"]) for c in cdrs)
    since, until = days[len(days) // 4], days[len(days) // 2]
    expected = sorted(c["id"] for c in cdrs if since <= parse_api_datetime(c["calldate"]) < until)
    walked = [r["id"] for r in hook.iter_records("cdrs", since=since, until=until, page_size=40)]
    assert walked == expected
    assert any(parse_api_datetime(c["calldate"]) == since for c in cdrs if c["id"] in walked)
    assert hook.count("cdrs", since=since, until=until) == len(expected)


def test_since_in_another_timezone_means_the_same_instant(hook, truth):
    monitors = truth("monitors")
    since = parse_api_datetime(monitors[len(monitors) // 2]["timestamp"])
    paris = since.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert [r["id"] for r in hook.iter_records("monitors", since=paris)] == [
        r["id"] for r in hook.iter_records("monitors", since=since)
    ]


def test_naive_datetimes_are_refused(hook):
    with pytest.raises(ValueError, match="timezone-aware"):
        list(hook.iter_records("cdrs", since=dt.datetime(2024, 1, 1)))


def test_filters_combine_with_the_walk(hook, truth):
    cdrs = truth("cdrs")
    user_id = cdrs[0]["user_id"]
    expected = [c["id"] for c in cdrs if c["user_id"] == user_id and c["type"] == "I"]
    walked = hook.iter_records(
        "cdrs",
        filters=[
            Filter("user_id", "eq", user_id),
            {"property": "type", "operator": "eq", "value": "I"},
        ],
        page_size=7,
    )
    assert [r["id"] for r in walked] == expected


def test_count_matches_the_truth(hook, truth):
    assert hook.count("voicemessages") == len(truth("voicemessages"))
    assert hook.count("chatmsgs", filters=[Filter("id", "lte", 10)]) == len(
        [m for m in truth("chatmsgs") if m["id"] <= 10]
    )


def test_page_size_comes_from_the_connection_and_is_capped(make_hook, api_requests):
    hook = make_hook(extra={"page_size": 7})
    next(iter(hook.iter_records("chats")))
    assert _query(api_requests("/chats")[0])["limit"] == "7"
    hook.list_page("chats", limit=MAX_PAGE_SIZE * 3)
    assert _query(api_requests("/chats")[-1])["limit"] == str(MAX_PAGE_SIZE)


def test_list_page_pages_and_sorts(hook, truth):
    ids = [r["id"] for r in truth("chats")]
    page_two, total = hook.list_page("chats", page=2, limit=5, sort="id", direction="asc")
    assert total == len(ids)
    assert [r["id"] for r in page_two] == ids[5:10]
    newest, _ = hook.list_page("chats", limit=3)
    assert [r["id"] for r in newest] == ids[::-1][:3]


def test_walk_of_an_exact_multiple_of_the_page_size_ends_without_an_empty_page(
    hook, truth, api_requests
):
    expected = [r["id"] for r in truth("chats")]
    assert len(expected) % 8 == 0, "the seeded chats should fill whole pages of 8"
    assert [r["id"] for r in hook.iter_records("chats", page_size=8)] == expected
    assert len(api_requests("/chats")) == len(expected) // 8


def test_walk_with_page_size_7_uses_one_request_per_page(hook, truth, api_requests):
    expected = [r["id"] for r in truth("voicemessages")]
    assert [r["id"] for r in hook.iter_records("voicemessages", page_size=7)] == expected
    assert len(api_requests("/voicemessages")) == math.ceil(len(expected) / 7)


class _PageCap(requests.adapters.HTTPAdapter):
    """Lowers every ``limit`` on the way to the sandbox: a service whose pages hold fewer
    rows than asked, whatever the client requests."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        query = [
            (k, str(min(int(v), self.cap)) if k == "limit" else v)
            for k, v in parse_qsl(parts.query)
        ]
        request.url = urlunsplit(parts._replace(query=urlencode(query)))
        return super().send(request, **kwargs)


def test_walk_continues_when_the_service_caps_pages_below_the_limit(hook, truth, api_requests):
    hook.get_conn().mount("http://", _PageCap(3))
    expected = [r["id"] for r in truth("chats")]
    walked = [r["id"] for r in hook.iter_records("chats", page_size=7)]
    assert walked == expected
    pages = api_requests("/chats")
    assert {_query(p)["limit"] for p in pages} == {"3"}
    assert len(pages) == math.ceil(len(expected) / 3)


@pytest.mark.parametrize("cap", [7, 50])
def test_walk_loses_no_rows_when_the_sandbox_caps_pages_below_the_limit(
    hook, sandbox, truth, api_requests, cap
):
    sandbox.control("PUT", "settings", {"max_page_size": cap})
    expected = [r["id"] for r in truth("cdrs")]
    walked = [r["id"] for r in hook.iter_records("cdrs", page_size=100)]
    assert walked == expected
    pages = api_requests("/cdrs")
    assert {_query(p)["limit"] for p in pages} == {"100"}  # asked for 100, got ``cap``
    assert len(pages) == math.ceil(len(expected) / cap)


# -- the service's page cap: 100 (the vendor CLI's page), 5,000, 10,000 or none --------------


@pytest.fixture
def many_chatmsgs(sandbox, truth) -> list[int]:
    """More chat messages than two of the hook's largest pages; their ids ascending."""
    sandbox.control("POST", "records/chatmsgs", {"count": 10_500})
    return [m["id"] for m in truth("chatmsgs")]


@pytest.mark.parametrize("cap", [100, 5000, 10_000, None], ids=str)
def test_a_walk_is_whole_under_every_page_cap(hook, sandbox, api_requests, many_chatmsgs, cap):
    sandbox.control("PUT", "settings", {"max_page_size": cap})
    walked = [m["id"] for m in hook.iter_records("chatmsgs", page_size=MAX_PAGE_SIZE)]
    assert walked == many_chatmsgs
    pages = api_requests("/chatmsgs")
    assert {_query(p)["limit"] for p in pages} == {str(MAX_PAGE_SIZE)}
    served = MAX_PAGE_SIZE if cap is None else min(cap, MAX_PAGE_SIZE)
    assert len(pages) == math.ceil(len(many_chatmsgs) / served)
    assert hook.count("chatmsgs") == len(many_chatmsgs)


@pytest.mark.parametrize("served", [3, 50, 1000])
def test_a_walk_is_whole_when_pages_hold_more_or_fewer_rows_than_asked(
    hook, sandbox, truth, api_requests, served
):
    sandbox.control("PUT", "settings", {"fixed_page_size": served})
    expected = [r["id"] for r in truth("cdrs")]
    walked = [r["id"] for r in hook.iter_records("cdrs", page_size=7)]
    assert walked == expected
    pages = api_requests("/cdrs")
    assert {_query(p)["limit"] for p in pages} == {"7"}  # asked 7, got ``served``
    assert len(pages) == math.ceil(len(expected) / served)
    since = parse_api_datetime(truth("cdrs")[len(expected) // 2]["calldate"])
    assert hook.count("cdrs", since=since) == len(
        [c for c in truth("cdrs") if parse_api_datetime(c["calldate"]) >= since]
    )


def test_a_walk_copes_with_both_encodings_of_enumerations_in_one_run(hook, sandbox, truth):
    sandbox.control("PUT", "settings", {"enums": "mixed"})
    walked = list(hook.iter_records("cdrs", page_size=37))
    assert walked == truth("cdrs")
    assert {type(c["type"]) for c in walked} == {int, str}


def test_list_page_sorts_descending_with_a_minus_as_public_clients_do(hook, truth):
    minus, total = hook.list_page("cdrs", limit=20, sort="-calldate")
    documented, _ = hook.list_page("cdrs", limit=20, sort="calldate", direction="DESC")
    assert minus == documented and total == len(truth("cdrs"))
    newest = max(c["calldate"] for c in truth("cdrs"))
    assert minus[0]["calldate"] == newest
