"""The sandbox as public clients of the real service see it: one encoding of enumerations
per account, ``sort=-field``, Basic auth by id or e-mail, API tokens, the wording of a refused
filter, and page caps of 100, 5,000, 10,000 rows or none."""

from __future__ import annotations

import json
import urllib.error

import pytest
import requests
from voipstudio_devstack import SandboxServer
from voipstudio_provider.endpoints import MAX_PAGE_SIZE
from voipstudio_sandbox.__main__ import parse_args
from voipstudio_sandbox.accounts import Settings
from voipstudio_sandbox.generate import DICTIONARIES, SANDBOX_PASSWORD

from tests.sandbox.sandbox_api import Api, records

ENUMERATED = ("type", "disposition", "destination")
TYPE_CODES = list(DICTIONARIES["cdrs"]["type"])


def _type_filter(value) -> list[dict]:
    return [{"property": "type", "operator": "eq", "value": value}]


def _all(api: Api, path: str, **params) -> dict:
    return api.page(path, limit=MAX_PAGE_SIZE, **params)


# --- one encoding of enumerations per account ----------------------------------------------


def test_enumerations_are_strings_by_default_and_filters_match_them(sandbox, api: Api):
    cdrs = _all(api, "/cdrs")["data"]
    assert all(isinstance(c[f], str) for c in cdrs for f in ENUMERATED)
    assert all(isinstance(m["type"], str) for m in _all(api, "/monitors")["data"])
    inbound = [c["id"] for c in cdrs if c["type"] == "I"]
    assert inbound and _all(api, "/cdrs", filter=_type_filter("I"))["total"] == len(inbound)
    # The other encoding names nothing in a strings account.
    assert _all(api, "/cdrs", filter=_type_filter(TYPE_CODES.index("I")))["total"] == 0


def test_an_integers_account_sends_and_filters_dictionary_positions(sandbox, api: Api):
    as_strings = {c["id"]: c for c in records(sandbox, "cdrs")}
    sandbox.control("PUT", "settings", {"enums": "integers"})
    cdrs = _all(api, "/cdrs")["data"]
    for cdr in cdrs:
        for field in ENUMERATED:
            codes = list(DICTIONARIES["cdrs"][field])
            assert cdr[field] == codes.index(as_strings[cdr["id"]][field])
    assert records(sandbox, "cdrs") == sorted(cdrs, key=lambda c: c["id"])  # the truth agrees
    inbound = {i for i, c in as_strings.items() if c["type"] == "I"}
    page = _all(api, "/cdrs", filter=_type_filter(TYPE_CODES.index("I")))
    assert {c["id"] for c in page["data"]} == inbound
    assert _all(api, "/cdrs", filter=_type_filter("I"))["total"] == 0


def test_a_mixed_account_answers_each_filter_in_its_own_encoding(sandbox, api: Api):
    sandbox.control("PUT", "settings", {"enums": "mixed"})
    cdrs = _all(api, "/cdrs")["data"]
    as_text = [c for c in cdrs if c["type"] == "I"]
    as_code = [c for c in cdrs if c["type"] == TYPE_CODES.index("I")]
    assert as_text and as_code  # both encodings in one account: what no client expects
    assert _all(api, "/cdrs", filter=_type_filter("I"))["total"] == len(as_text)
    code = TYPE_CODES.index("I")
    assert _all(api, "/cdrs", filter=_type_filter(code))["total"] == len(as_code)


def test_records_added_with_integer_enumerations_are_sent_in_the_accounts_encoding(
    sandbox, api: Api
):
    (new_id,) = sandbox.control("POST", "records/cdrs", {"fields": {"disposition": 2}})["ids"]
    cdr = api.get(f"/cdrs/{new_id}").json()["data"]
    assert cdr["disposition"] == "CONNECTED"
    response = api.request("PATCH", "/cdrs", json=[{"id": new_id, "disposition": "VM"}])
    assert response.status_code == 200
    sandbox.control("PUT", "settings", {"enums": "integers"})
    assert api.get(f"/cdrs/{new_id}").json()["data"]["disposition"] == 4  # VM's position


def test_an_unknown_encoding_is_refused(sandbox):
    with pytest.raises(urllib.error.HTTPError) as refused:
        sandbox.control("PUT", "settings", {"enums": "roman"})
    assert refused.value.code == 400


# --- sorting -------------------------------------------------------------------------------


def test_sort_minus_field_sorts_descending_like_dir_desc(api: Api):
    minus = api.page("/cdrs", sort="-calldate", limit=50)["data"]
    documented = api.page("/cdrs", sort="calldate", dir="DESC", limit=50)["data"]
    assert minus == documented
    dates = [c["calldate"] for c in minus]
    assert dates == sorted(dates, reverse=True) and dates[0] > dates[-1]
    ascending = api.page("/cdrs", sort="calldate", dir="ASC", limit=50)["data"]
    assert ascending[0]["calldate"] < dates[-1]


def test_sort_minus_an_unknown_field_is_refused(api: Api):
    assert api.get("/cdrs", params={"sort": "-no_such_field"}).status_code == 400


# --- Basic authentication by user id or e-mail --------------------------------------------


def _basic(sandbox: SandboxServer, user: str, token: str) -> requests.Response:
    return requests.get(sandbox.base_url + "/me", auth=(user, token), timeout=30)


def test_basic_auth_names_the_user_by_id_or_email(sandbox):
    root, other = records(sandbox, "users")[0], records(sandbox, "users")[1]
    for user in (str(root["id"]), root["email"], root["email"].upper()):
        answer = _basic(sandbox, user, sandbox.token)
        assert answer.status_code == 200 and answer.json()["data"]["id"] == root["id"]
    user_token = f"{sandbox.token}-user-{other['id']}"
    assert _basic(sandbox, other["email"], user_token).json()["data"]["id"] == other["id"]
    # A user who is not the token's own, by either name, is refused.
    assert _basic(sandbox, other["email"], sandbox.token).status_code == 401
    assert _basic(sandbox, str(other["id"]), sandbox.token).status_code == 401
    assert _basic(sandbox, "nobody@example.com", sandbox.token).status_code == 401


# --- API tokens, as the vendor CLI's auth login and logout use them --------------------------


def _login(sandbox: SandboxServer, email: str) -> Api:
    answer = requests.post(
        sandbox.base_url + "/login", json={"email": email, "password": SANDBOX_PASSWORD}, timeout=30
    )
    assert answer.status_code == 200
    return Api(sandbox, answer.json()["user_token"])


def test_a_created_api_token_authenticates_and_a_revoked_one_answers_401(sandbox):
    user = records(sandbox, "users")[1]
    session = _login(sandbox, user["email"])
    created = session.request("POST", "/apitokens", json={"name": "cli", "expiry": "2999-01-01"})
    assert created.status_code == 201
    token = created.json()["data"]["token"]
    assert token and token != sandbox.token

    api = Api(sandbox, token)
    assert api.get("/me").json()["data"]["id"] == user["id"]
    assert _basic(sandbox, user["email"], token).status_code == 200
    mine = api.page("/cdrs", limit=MAX_PAGE_SIZE)["data"]
    assert mine and {c["user_id"] for c in mine} == {user["id"]}  # only their records

    revoked = api.request("DELETE", f"/apitokens/{token}")
    assert revoked.status_code == 204
    assert api.get("/me").status_code == 401
    assert session.request("DELETE", f"/apitokens/{token}").status_code == 404


def test_api_tokens_are_listed_by_name_and_only_to_their_user(sandbox):
    first, second = records(sandbox, "users")[1:3]
    session = _login(sandbox, first["email"])
    for name in ("cli laptop", "cli desktop", "reporting"):
        assert session.request("POST", "/apitokens", json={"name": name}).status_code == 201
    other = _login(sandbox, second["email"])
    other_token = other.request("POST", "/apitokens", json={"name": "cli"}).json()["data"]

    listed = session.page("/apitokens")
    assert [t["name"] for t in listed["data"]] == ["cli laptop", "cli desktop", "reporting"]
    by_name = session.page("/apitokens", filter=[{"property": "name", "operator": "eq",
                                                  "value": "reporting"}])  # fmt: skip
    assert [t["name"] for t in by_name["data"]] == ["reporting"] and by_name["total"] == 1
    like = session.page("/apitokens", filter=[{"property": "name", "operator": "like",
                                               "value": "cli"}])  # fmt: skip
    assert [t["name"] for t in like["data"]] == ["cli laptop", "cli desktop"]
    refused = session.get("/apitokens", params={"filter": json.dumps(
        [{"property": "token", "operator": "eq", "value": "x"}])})  # fmt: skip
    assert refused.status_code == 400 and refused.json()["message"] == "Filtration error"
    # Another user's token can be neither seen nor revoked; the account root may revoke it.
    assert other_token["token"] not in {t["token"] for t in listed["data"]}
    assert session.request("DELETE", f"/apitokens/{other_token['token']}").status_code == 404
    root = Api(sandbox, sandbox.token)
    assert root.request("DELETE", f"/apitokens/{other_token['token']}").status_code == 204


def test_api_tokens_need_a_name_a_valid_expiry_and_credentials(sandbox):
    session = _login(sandbox, records(sandbox, "users")[0]["email"])
    assert session.request("POST", "/apitokens", json={}).status_code == 400
    bad_expiry = {"name": "x", "expiry": "next week"}
    assert session.request("POST", "/apitokens", json=bad_expiry).status_code == 400
    assert Api(sandbox).request("POST", "/apitokens", json={"name": "x"}).status_code == 401
    expired = session.request("POST", "/apitokens", json={"name": "old", "expiry": "2001-01-01"})
    assert Api(sandbox, expired.json()["data"]["token"]).get("/me").status_code == 401


def test_a_reset_forgets_api_tokens(sandbox):
    session = Api(sandbox, sandbox.token)
    token = session.request("POST", "/apitokens", json={"name": "cli"}).json()["data"]["token"]
    assert Api(sandbox, token).get("/ping").status_code == 200
    sandbox.control("POST", "reset")
    assert Api(sandbox, token).get("/ping").status_code == 401


# --- refused filters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        {"property": "no_such_field", "operator": "eq", "value": 1},
        {"property": "id", "operator": "between", "value": 1},
        {"property": "id", "operator": "eq", "value": [1, 2]},
    ],
    ids=["unknown property", "unknown operator", "list value"],
)
def test_a_refused_filter_answers_filtration_error_and_says_why(api: Api, condition):
    response = api.get("/cdrs", params={"filter": json.dumps([condition])})
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Filtration error"
    assert body["errors"][0]["property"] == condition["property"]
    assert body["errors"][0]["message"] != "Filtration error"  # the detail is kept


# --- page caps -----------------------------------------------------------------------------


@pytest.fixture
def many_chatmsgs(sandbox) -> int:
    """Enough chat messages for pages of more than 5,000 rows; their total."""
    sandbox.control("POST", "records/chatmsgs", {"count": 10_500})
    return len(records(sandbox, "chatmsgs"))


@pytest.mark.parametrize("cap", [100, 5000, 10_000, None], ids=str)
def test_a_page_holds_at_most_the_cap_whatever_limit_asks(sandbox, api: Api, many_chatmsgs, cap):
    sandbox.control("PUT", "settings", {"max_page_size": cap})
    page = api.page("/chatmsgs", limit=20_000, sort="id", dir="ASC")
    expected = many_chatmsgs if cap is None else min(cap, many_chatmsgs)
    assert len(page["data"]) == expected and page["total"] == many_chatmsgs
    ids = [m["id"] for m in page["data"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_the_default_cap_is_the_assumed_5000():
    assert Settings().max_page_size == MAX_PAGE_SIZE
    assert parse_args([]).max_page_size == MAX_PAGE_SIZE
    assert parse_args(["--max-page-size", "none"]).max_page_size is None
    assert parse_args(["--max-page-size", "10000"]).max_page_size == 10_000
    assert parse_args([]).enums == "strings"


def test_a_fixed_page_size_answers_more_rows_than_asked(sandbox, api: Api):
    sandbox.control("PUT", "settings", {"fixed_page_size": 30})
    chats = [c["id"] for c in records(sandbox, "chats")]
    first = api.page("/chats", limit=7, sort="id", dir="ASC")
    second = api.page("/chats", limit=7, page=2, sort="id", dir="ASC")
    assert [c["id"] for c in first["data"]] == chats[:30]
    assert [c["id"] for c in second["data"]] == chats[30:60]


def test_the_command_line_sets_the_encoding_and_no_page_cap(tmp_path):
    with SandboxServer(tmp_path, seed=5, enums="integers", max_page_size="none") as server:
        assert server.control("GET", "settings")["enums"] == "integers"
        assert server.control("GET", "settings")["max_page_size"] is None
        server.control("POST", "records/chatmsgs", {"count": MAX_PAGE_SIZE + 10})
        api = Api(server, server.token)
        page = api.page("/chatmsgs", limit=MAX_PAGE_SIZE * 3)
        assert len(page["data"]) == page["total"] > MAX_PAGE_SIZE
        cdr = api.page("/cdrs", limit=1)["data"][0]
        assert all(isinstance(cdr[field], int) for field in ENUMERATED)
        # A reset keeps what the command line said.
        server.control("PUT", "settings", {"enums": "strings"})
        server.control("POST", "reset")
        assert server.control("GET", "settings")["enums"] == "integers"
