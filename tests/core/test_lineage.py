"""Edit chains and batches in the history: a prediction remembers the image it edited and the
batch that sent it, a chain is read back from either end (bounded, so an odd row that makes a
cycle cannot hang a page), History filters to a chain or a batch, the exports carry both, and a
history written by the release before (schema 3) gains the columns with its rows kept.

On SQLite and PostgreSQL (the `store` and `database_url` fixtures)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from comet import export
from comet.batch import Batches, BatchRunner, BatchSpec, plan
from comet.prediction import Prediction
from comet.store import CHAIN_DEPTH, SCHEMA_VERSION, HistoryFilter, Store, meta, metadata, predictions
from support.waiting import wait_until

SCHNELL, KONTEXT = "black-forest-labs/flux-schnell", "black-forest-labs/flux-kontext-pro"
START = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = "b" * 32


def pid(n: int) -> str:
    return f"p{n:025d}"


def prediction(n: int, *, prompt: str | None = None, model: str = SCHNELL, status: str = "succeeded") -> Prediction:
    created = (START + timedelta(minutes=n)).isoformat().replace("+00:00", "Z")
    return Prediction.from_json({"id": pid(n), "model": model, "status": status,
                                 "input": {"prompt": prompt or f"generation {n}"}, "created_at": created})


def chain(store: Store, *numbers: int) -> None:
    """Record predictions each editing image 0 of the one before."""
    parent = None
    for n in numbers:
        store.record(prediction(n, model=KONTEXT if parent else SCHNELL), parent=parent)
        parent = (pid(n), 0)


def ids(links) -> list[str]:
    return [link.id for link in links]


# ---- recording -----------------------------------------------------------------------------


def test_a_prediction_remembers_the_image_it_edited_and_its_batch(store):
    store.record(prediction(1))
    store.record(prediction(2, model=KONTEXT), parent=(pid(1), 1), batch_id=BATCH, creator="ana")

    child, root = store.get(pid(2)), store.get(pid(1))
    assert (child.parent_id, child.parent_output, child.batch_id, child.creator) == (pid(1), 1, BATCH, "ana")
    assert (root.parent_id, root.parent_output, root.batch_id) == (None, None, None)


def test_later_answers_and_records_never_change_the_recorded_parent_or_batch(store):
    store.record(prediction(1))
    store.record(prediction(9))
    store.record(prediction(2, status="starting"), parent=(pid(1), 0), batch_id=BATCH)
    store.update(prediction(2, status="processing"))
    store.record(prediction(2, status="processing"), parent=(pid(9), 3), batch_id="c" * 32)  # tracked again
    store.save_outputs(pid(2), [], latest=prediction(2))

    kept = store.get(pid(2))
    assert (kept.parent_id, kept.parent_output, kept.batch_id, kept.status) == (pid(1), 0, BATCH, "succeeded")


def test_a_second_record_fills_a_parent_and_batch_that_were_not_known(store):
    store.record(prediction(1))
    store.record(prediction(2))  # e.g. tracked by id first
    store.record(prediction(2), parent=(pid(1), 0), batch_id=BATCH)
    assert (store.get(pid(2)).parent_id, store.get(pid(2)).batch_id) == (pid(1), BATCH)


def test_a_prediction_cannot_be_its_own_parent_and_a_bad_parent_id_is_not_kept(store):
    store.record(prediction(1), parent=(pid(1), 0))  # itself
    store.record(prediction(2), parent=("../../etc/passwd", 0))  # not an id
    store.record(prediction(3), parent=(pid(1), 0))  # the good case beside them
    assert store.get(pid(1)).parent_id is None
    assert store.get(pid(2)).parent_id is None
    assert store.get(pid(3)).parent_id == pid(1)


# ---- reading a chain -------------------------------------------------------------------------


def test_a_chain_of_three_generations_reads_from_every_link(store):
    chain(store, 1, 2, 3)
    store.record(prediction(4))  # unrelated

    middle = store.lineage(pid(2))
    assert ids(middle.ancestors) == [pid(1)] and ids(middle.children) == [pid(3)] and not middle.cut
    assert middle.children[0].parent_output == 0 and middle.children[0].model == KONTEXT
    last = store.lineage(pid(3))
    assert ids(last.ancestors) == [pid(1), pid(2)] and last.children == []  # oldest first
    first = store.lineage(pid(1))
    assert first.ancestors == [] and ids(first.children) == [pid(2)]
    alone = store.lineage(pid(4))
    assert (alone.ancestors, alone.children, alone.cut) == ([], [], False)


def test_children_of_one_image_are_all_listed_oldest_first(store):
    store.record(prediction(1))
    store.record(prediction(3), parent=(pid(1), 0))
    store.record(prediction(2), parent=(pid(1), 1))
    assert ids(store.lineage(pid(1)).children) == [pid(2), pid(3)]


def test_a_parent_missing_from_the_history_ends_the_walk(store):
    store.record(prediction(2), parent=(pid(1), 0))  # its parent was never recorded here
    found = store.lineage(pid(2))
    assert found.ancestors == [] and not found.cut and store.get(pid(2)).parent_id == pid(1)


def test_a_cycle_written_by_an_odd_row_ends_and_says_so(store, database_url):
    chain(store, 1, 2, 3)
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:  # nothing the app writes does this: a hand-edited database
        conn.execute(sa.update(predictions).where(predictions.c.id == pid(1)).values(parent_id=pid(3)))
    engine.dispose()

    found = store.lineage(pid(2))
    assert ids(found.ancestors) == [pid(3), pid(1)] and found.cut and ids(found.children) == [pid(3)]
    assert store.count(HistoryFilter(chain=pid(2))) == 3  # the filter's walk ends too


def test_the_walk_up_is_bounded(store):
    chain(store, *range(1, CHAIN_DEPTH + 2))  # the last has CHAIN_DEPTH ancestors: all listed
    whole = store.lineage(pid(CHAIN_DEPTH + 1))
    assert len(whole.ancestors) == CHAIN_DEPTH and whole.ancestors[0].id == pid(1) and not whole.cut

    store.record(prediction(CHAIN_DEPTH + 2), parent=(pid(CHAIN_DEPTH + 1), 0))  # one more than the bound
    deeper = store.lineage(pid(CHAIN_DEPTH + 2))
    assert len(deeper.ancestors) == CHAIN_DEPTH and deeper.ancestors[0].id == pid(2) and deeper.cut


# ---- History's filters and exports -------------------------------------------------------------


def test_history_filters_to_a_chain_through_a_prediction_and_to_a_batch(store):
    chain(store, 1, 2, 3)
    store.record(prediction(4), parent=(pid(1), 0))  # another edit of the first: a sibling branch
    store.record(prediction(5), batch_id=BATCH)
    store.record(prediction(6), batch_id=BATCH)
    store.record(prediction(7), batch_id="c" * 32)

    through_middle = HistoryFilter(chain=pid(2))
    assert list(store.page(through_middle)["id"]) == [pid(3), pid(2), pid(1)]  # not the sibling
    assert store.count(through_middle) == 3 and list(store.export_rows(through_middle)["id"]) == [pid(3), pid(2), pid(1)]
    assert store.count(HistoryFilter(chain=pid(1))) == 4  # the root's chain holds every edit of it
    assert store.count(HistoryFilter(chain=pid(4))) == 2
    assert store.count(HistoryFilter(chain=pid(5))) == 1  # not edited, not an edit: itself
    assert store.count(HistoryFilter(chain="p-unknown-id-000")) == 0

    in_batch = HistoryFilter(batch=BATCH)
    assert list(store.page(in_batch)["id"]) == [pid(6), pid(5)] and store.count(in_batch) == 2
    assert store.count(HistoryFilter(batch=BATCH, chain=pid(2))) == 0  # filters combine
    assert HistoryFilter(batch="", chain="").matches_all


def test_the_page_and_the_csv_export_carry_parent_and_batch(store):
    chain(store, 1, 2)
    store.record(prediction(3), batch_id=BATCH)

    page = store.page().set_index("id")
    assert page.loc[pid(2), "parent_id"] == pid(1) and page.loc[pid(3), "batch_id"] == BATCH
    assert page.loc[pid(1), "parent_id"] is None

    rows = list(csv.DictReader(io.StringIO(export.history_csv(store.export_rows()))))
    by_id = {row["id"]: row for row in rows}
    assert {"parent_id", "parent_output", "batch_id"} <= set(rows[0])
    assert (by_id[pid(2)]["parent_id"], by_id[pid(2)]["parent_output"], by_id[pid(2)]["batch_id"]) == (pid(1), "0", "")
    assert (by_id[pid(3)]["parent_id"], by_id[pid(3)]["batch_id"]) == ("", BATCH)


@pytest.mark.parametrize("passed_on", [True, False], ids=["by-track", "stamped-when-settled"])
def test_a_batchs_predictions_name_their_batch(sim, client, store, passed_on):
    # The runner hands the batch id to track(); should a track not keep it (or the row be
    # recorded late), marking the cell sent stamps it on the row all the same.
    def track(prediction, creator, batch_id):
        store.record(prediction, creator=creator, batch_id=batch_id if passed_on else None)

    batches = Batches(store)
    runner = BatchRunner(batches, create=client.create, poll=0.2, track=track).start()
    try:
        batch_id = runner.submit(plan(BatchSpec(prompts=("a fox", "a boat"), models=(SCHNELL,), variations=1, seed=5)))
        wait_until(lambda: not batches.get(batch_id).active)
    finally:
        runner.stop()
    sent = {cell.prediction_id for cell in batches.cells(batch_id)}
    assert len(sent) == 2 and store.count(HistoryFilter(batch=batch_id)) == 2
    assert set(store.page(HistoryFilter(batch=batch_id))["id"]) == sent
    store.record(prediction(1))  # made on the Create page: in no batch
    assert store.get(pid(1)).batch_id is None and store.count() == 3


# ---- migration ---------------------------------------------------------------------------------


def test_a_version_3_history_with_rows_gains_lineage_and_batch(database_url):
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:  # schema 3: today's tables without the three columns
        metadata.create_all(conn)
        for index in ("ix_predictions_parent", "ix_predictions_batch"):
            conn.exec_driver_sql(f"DROP INDEX {index}")
        for column in ("parent_id", "parent_output", "batch_id"):
            conn.exec_driver_sql(f"ALTER TABLE predictions DROP COLUMN {column}")
        conn.execute(sa.insert(meta).values(key="schema_version", value="3"))
        conn.exec_driver_sql(
            "INSERT INTO predictions (id, model, status, input, prompt, logs_tail, created_at, recorded_at, "
            "updated_at, poll_failures, tracking, output_urls, data_removed, output_count) VALUES "
            f"('{pid(1)}', '{SCHNELL}', 'succeeded', '{{}}', 'kept from v3', '', 1767225660.0, 1767225660.0, "
            "1767225660.0, 0, 'done', '[]', false, 0)")
    engine.dispose()

    first, second = Store(database_url), Store(database_url)  # a second open finds nothing to do
    try:
        assert first.schema_version == second.schema_version == SCHEMA_VERSION == 4
        kept = first.get(pid(1))
        assert (kept.prompt, kept.parent_id, kept.parent_output, kept.batch_id) == ("kept from v3", None, None, None)
        first.record(prediction(2), parent=(pid(1), 0), batch_id=BATCH)
        assert ids(second.lineage(pid(1)).children) == [pid(2)]
        assert second.count(HistoryFilter(batch=BATCH)) == 1
    finally:
        first.close()
        second.close()
    engine = sa.create_engine(database_url)
    try:
        indexes = {index["name"] for index in sa.inspect(engine).get_indexes("predictions")}
        assert {"ix_predictions_parent", "ix_predictions_batch"} <= indexes
    finally:
        engine.dispose()


@pytest.mark.parametrize("value", [0, 3])
def test_the_recorded_output_index_is_kept_as_given(store, value):
    store.record(prediction(1))
    store.record(prediction(2), parent=(pid(1), value))
    assert store.get(pid(2)).parent_output == value
