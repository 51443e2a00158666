"""An erasure's plan, built from the sandbox, finds its number in every form that can be
no other number, and leaves look-alikes out, with and without a default region."""

from __future__ import annotations

import pytest
from voipstudio_provider.engine.deletion.purge import build_plan, parse_purge_request
from voipstudio_provider.engine.subjects.legal_hold import LegalHold

#: +1 212 555 0147 as people and the API write it, each nothing but that number.
SAME = ("1-212-555-0147", "12125550147", "001 212 555 0147", "+1 (212) 555-0147 ext. 9")
#: Numbers that look like it and are not it (an Istanbul number among them).
LOOK_ALIKES = ("0212 5550147", "+90 212 555 0147", "12125550148", "+44 212 555 0147")


def add(sandbox, resource: str, **fields) -> int:
    return sandbox.control("POST", f"records/{resource}", {"count": 1, "fields": fields})["ids"][0]


@pytest.mark.parametrize("region", [None, "US", "GB", "TR"])
def test_the_plan_takes_every_form_of_the_number_and_no_look_alike(hook, sandbox, truth, region):
    same = {add(sandbox, "monitors", caller=v, called="101") for v in SAME}
    others = {add(sandbox, "monitors", caller=v, called="101") for v in LOOK_ALIKES}
    subject_chat, other_chat = truth("chats")[:2]
    add(sandbox, "chatmsgs", chat_id=subject_chat["id"], message="call 001 212 555 0147 today")
    add(sandbox, "chatmsgs", chat_id=other_chat["id"], message="call 0212 5550147 today")

    request = parse_purge_request({"phone_number": "+1 212 555 0147"}, region=region)
    plan = build_plan(hook, request, LegalHold())

    monitors = plan["resources"]["monitors"]
    assert set(monitors["ids"]) & (same | others) == same
    assert {monitors["matched"][str(i)] for i in same} == set(SAME)
    chats = plan["resources"]["chatmsgs"]["chat_ids"]
    assert subject_chat["id"] in chats and other_chat["id"] not in chats
