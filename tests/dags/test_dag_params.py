"""The DAGs' run forms: shared fields are the same field everywhere, and the factory refuses
what it does not know."""

from __future__ import annotations

import pytest
from airflow.sdk import Param
from voipstudio_provider.tasks.params import PARAM_GROUPS, dag_params
from voipstudio_provider.tasks.settings import S3_OPTION_NAMES

from tests.dags.conftest import DAGS_FOLDER

ARCHIVE_DAG_IDS = ("voipstudio_archive_recordings", "voipstudio_archive_pcaps")
# The DAGs a run may point at another bucket or prefix.
LOCATED_DAG_IDS = {*ARCHIVE_DAG_IDS, "voipstudio_export_user_cdrs", "voipstudio_reconcile"}
DELETING_DAG_IDS = ("voipstudio_retention", "voipstudio_compliance_purge")


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    return bag.dags


def form(dag, names) -> list[dict]:
    """What the trigger form shows of ``names``: value, schema and description, in order."""
    return [dag.params.get_param(name).serialize() for name in names]


def group_form(group: str) -> list[dict]:
    return [param.serialize() for param in dag_params(group).values()]


def test_every_dag_that_takes_a_location_offers_the_same_bucket_and_prefix_first(dags):
    located = {dag_id for dag_id, dag in dags.items() if "bucket" in dag.params}
    assert located == LOCATED_DAG_IDS
    for dag_id in sorted(located):
        assert list(dags[dag_id].params)[:2] == ["bucket", "prefix"]
        assert form(dags[dag_id], ["bucket", "prefix"]) == group_form("location")


@pytest.mark.parametrize("group", ["batches", "s3_options"])
def test_both_archive_dags_offer_the_same_batch_and_s3_option_fields(dags, group):
    names = list(dag_params(group))
    for dag_id in ARCHIVE_DAG_IDS:
        assert form(dags[dag_id], names) == group_form(group)


def test_the_s3_option_fields_are_the_options_the_archive_resolves():
    assert tuple(dag_params("s3_options")) == S3_OPTION_NAMES


@pytest.mark.parametrize("dag_id", DELETING_DAG_IDS)
def test_a_deleting_dag_offers_no_bucket_prefix_or_s3_option(dags, dag_id):
    shared = {name for group in PARAM_GROUPS for name in dag_params(group)}
    assert "dry_run" in dags[dag_id].params
    assert shared.isdisjoint(dags[dag_id].params)


def test_every_field_of_every_form_has_a_title_and_a_description(dags):
    for dag_id, dag in dags.items():
        for name in dag.params:
            param = dag.params.get_param(name)
            assert param.schema.get("title"), (dag_id, name)
            assert param.description, (dag_id, name)


def test_groups_come_in_the_order_asked_then_the_dags_own_params():
    params = dag_params("s3_options", "location", day=Param(None), users_per_batch=Param(25))
    assert list(params) == [*S3_OPTION_NAMES, "bucket", "prefix", "day", "users_per_batch"]


def test_each_call_builds_its_own_params():
    assert dag_params("location")["bucket"] is not dag_params("location")["bucket"]


def test_an_unknown_group_is_refused():
    with pytest.raises(ValueError, match=r"unknown param groups \['locations'\]"):
        dag_params("location", "locations")


@pytest.mark.parametrize(
    ("groups", "own"),
    [(("location", "location"), {}), (("s3_options",), {"sse": Param("AES256")})],
)
def test_a_param_named_twice_is_refused(groups, own):
    with pytest.raises(ValueError, match="params named twice"):
        dag_params(*groups, **own)
