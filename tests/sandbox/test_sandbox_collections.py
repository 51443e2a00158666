"""Authentication, visibility per user, paging, sorting and filtering of collections."""

from __future__ import annotations

import json
import urllib.error

import pytest
from voipstudio_provider.endpoints import DEFAULT_PAGE_SIZE, FILTER_OPERATORS, MAX_PAGE_SIZE

from tests.sandbox.sandbox_api import Api, records

# --- authentication ---------------------------------------------------------------------


def test_basic_auth_with_user_id_and_token(sandbox):
    api = Api(sandbox)
    ok = api.get("/me", auth=("1001", sandbox.token))
    assert ok.status_code == 200 and ok.json()["data"]["id"] == 1001
    assert api.get("/me", auth=("1002", sandbox.token)).status_code == 401
    user = api.get("/me", auth=("1002", f"{sandbox.token}-user-1002"))
    assert user.json()["data"]["id"] == 1002


@pytest.mark.parametrize("token", ["wrong", "", "sandbox-token-user-999", "sandbox-token-user-x"])
def test_bad_tokens_are_401_with_a_json_error(sandbox, token):
    response = Api(sandbox, token).get("/cdrs")
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"]
    assert sandbox.token not in response.text


def test_login_gives_a_session_token_that_works(sandbox):
    api = Api(sandbox)
    user = next(u for u in records(sandbox, "users") if u["id"] == 1003)
    answer = api.request(
        "POST", "/login", json={"email": user["email"], "password": "sandbox-password"}
    ).json()
    assert answer["message"] == "Login success" and answer["user_id"] == 1003
    me = Api(sandbox, answer["user_token"]).get("/me").json()["data"]
    assert me["email"] == user["email"]
    wrong = api.request("POST", "/login", json={"email": user["email"], "password": "nope"})
    assert wrong.status_code == 401


def test_a_user_sees_only_their_own_records(sandbox, user_api: Api):
    own = [c for c in records(sandbox, "cdrs") if c["user_id"] == 1002]
    page = user_api.page("/cdrs", limit=MAX_PAGE_SIZE)
    assert page["total"] == len(own) > 0
    assert {c["id"] for c in page["data"]} == {c["id"] for c in own}


def test_a_user_gets_403_for_another_users_record(sandbox, user_api: Api):
    other = next(m for m in records(sandbox, "monitors") if m["user_id"] != 1002)
    for path in (f"/monitors/{other['id']}", f"/monitors/{other['id']}.mp3"):
        assert user_api.get(path).status_code == 403
    assert user_api.request("DELETE", f"/monitors/{other['id']}").status_code == 403
    assert other in records(sandbox, "monitors")
    assert user_api.get("/users/1003/cdrs.csv").status_code == 403


# --- paging and sorting -----------------------------------------------------------------


def test_default_page_is_25_newest_first(sandbox, api: Api):
    page = api.page("/cdrs")
    ids = [c["id"] for c in records(sandbox, "cdrs")]
    assert page["total"] == len(ids)
    assert [c["id"] for c in page["data"]] == sorted(ids, reverse=True)[:DEFAULT_PAGE_SIZE]


def test_pages_cover_the_collection_once(sandbox, api: Api):
    seen = []
    for number in range(1, 100):
        data = api.page("/cdrs", page=number, limit=70)["data"]
        if not data:
            break
        seen.extend(c["id"] for c in data)
    assert sorted(seen) == [c["id"] for c in records(sandbox, "cdrs")]


def test_limit_is_capped(sandbox, api: Api):
    sandbox.control("POST", "records/chatmsgs", {"count": MAX_PAGE_SIZE, "fields": {"chat_id": 1}})
    page = api.page("/chatmsgs", limit=MAX_PAGE_SIZE * 2)
    assert len(page["data"]) == MAX_PAGE_SIZE < page["total"]


def test_sort_and_dir(sandbox, api: Api):
    data = api.page("/monitors", sort="size", dir="ASC", limit=MAX_PAGE_SIZE)["data"]
    assert [m["size"] for m in data] == sorted(m["size"] for m in records(sandbox, "monitors"))
    newest = api.page("/monitors", sort="timestamp", dir="desc", limit=1)["data"][0]
    assert newest["timestamp"] == max(m["timestamp"] for m in records(sandbox, "monitors"))


@pytest.mark.parametrize(
    "params",
    [{"page": 0}, {"page": "x"}, {"limit": 0}, {"limit": "-3"}, {"sort": "nope"}, {"dir": "UP"}],
)
def test_bad_paging_parameters_are_400(api: Api, params):
    response = api.get("/cdrs", params=params)
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"]


# --- filters ----------------------------------------------------------------------------

_COMPARE = {
    "eq": lambda a, b: a == b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


@pytest.mark.parametrize("operator", sorted(_COMPARE))
def test_comparison_operators_on_numbers_and_dates(sandbox, api: Api, operator):
    monitors = records(sandbox, "monitors")
    pivot = monitors[len(monitors) // 2]
    for field in ("size", "timestamp"):
        condition = {"property": field, "operator": operator, "value": pivot[field]}
        page = api.page("/monitors", filter=[condition], limit=MAX_PAGE_SIZE)
        expected = {m["id"] for m in monitors if _COMPARE[operator](m[field], pivot[field])}
        assert {m["id"] for m in page["data"]} == expected and page["total"] == len(expected)


def test_like_is_a_substring_match_anded_with_other_filters(sandbox, api: Api):
    cdrs = records(sandbox, "cdrs")
    conditions = [
        {"property": "src", "operator": "like", "value": "4420"},
        {"property": "type", "operator": "eq", "value": "O"},
    ]
    page = api.page("/cdrs", filter=conditions, limit=MAX_PAGE_SIZE)
    expected = {c["id"] for c in cdrs if "4420" in c["src"] and c["type"] == "O"}
    assert {c["id"] for c in page["data"]} == expected and expected
    # Not only prefixes: a run of digits from the middle of the number matches too.
    middle = next(c["dst"][3:7] for c in cdrs if not c["dst"].startswith(c["dst"][3:7]))
    page = api.page(
        "/cdrs", filter=[{"property": "dst", "operator": "like", "value": middle}], limit=5000
    )
    assert {c["id"] for c in page["data"]} == {c["id"] for c in cdrs if middle in c["dst"]}


@pytest.mark.parametrize("value", ["44%", "%4420%", "44_0"])
def test_like_treats_wildcard_characters_as_themselves(sandbox, api: Api, value):
    page = api.page("/cdrs", filter=[{"property": "src", "operator": "like", "value": value}])
    assert page["total"] == sum(value in c["src"] for c in records(sandbox, "cdrs")) == 0


@pytest.mark.parametrize("prop", ["labels", "metadata", "nb_notes"])
def test_some_properties_answer_filtration_error(sandbox, api: Api, prop):
    response = api.get(
        "/cdrs", params={"filter": json.dumps([{"property": prop, "operator": "eq", "value": 1}])}
    )
    assert response.status_code == 400
    assert response.json()["message"] == "Filtration error"


def test_a_service_page_cap_answers_fewer_rows_than_asked(sandbox, api: Api):
    sandbox.control("PUT", "settings", {"max_page_size": 7})
    page = api.page("/cdrs", limit=100)
    assert len(page["data"]) == 7 and page["total"] == len(records(sandbox, "cdrs"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        sandbox.control("PUT", "settings", {"max_page_size": 0})
    assert refused.value.code == 400


def test_a_bare_date_filters_whole_days(sandbox, api: Api):
    cdrs = records(sandbox, "cdrs")
    day = cdrs[len(cdrs) // 2]["calldate"][:10]
    page = api.page(
        "/cdrs",
        filter=[
            {"property": "calldate", "operator": "gte", "value": day},
            {"property": "calldate", "operator": "lt", "value": day + " 23:59:60"},
        ],
        limit=MAX_PAGE_SIZE,
    )
    assert {c["id"] for c in page["data"]} == {c["id"] for c in cdrs if c["calldate"][:10] == day}


def test_filter_operators_are_the_documented_ones():
    assert set(FILTER_OPERATORS) == set(_COMPARE) | {"like"}


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps([{"property": "id", "operator": "between", "value": [1, 5]}]),
        json.dumps([{"property": "id", "operator": "in", "value": 3}]),
        json.dumps([{"property": "nope", "operator": "eq", "value": 3}]),
        "[{not json",
        json.dumps("calldate"),
    ],
    ids=["between", "unknown-operator", "unknown-field", "malformed", "not-a-list"],
)
def test_bad_filters_are_400(api: Api, raw):
    response = api.get("/cdrs", params={"filter": raw})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"]


def test_calltracking_lists(sandbox, api: Api):
    numbers = {n["e164"] for n in records(sandbox, "calltracking")}
    tracked = api.page("/calltracking/cdrs", limit=MAX_PAGE_SIZE)
    assert {n["e164"] for n in tracked["data"]} == numbers
    calls = api.page("/cdrs/calltracking", limit=MAX_PAGE_SIZE)
    expected = {c["id"] for c in records(sandbox, "cdrs") if c["dst"] in numbers}
    assert {c["id"] for c in calls["data"]} == expected and expected
