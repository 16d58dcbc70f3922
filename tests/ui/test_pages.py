"""Every page run headlessly with AppTest against a real runtime and a seeded mart: no exception, key
elements present, and the interactions users rely on."""

from __future__ import annotations

import sys
import time

import pytest
import sqlalchemy as sa

from tests.ui.conftest import page, texts

pytestmark = pytest.mark.timeout(300)


def _param(at, name: str) -> list[str]:
    value = at.query_params[name]
    return list(value) if isinstance(value, list | tuple) else [value]


def test_overview_shows_kpis_movers_anomalies(seeded):
    at = page("overview").run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert any(label.startswith("Month to date") for label in labels)
    assert "End-of-month forecast" in labels and "vs last month, same day" in labels
    # The month-end card reads mart.forecast_totals: its point and its own interval, not summed daily bounds.
    assert next(m.value for m in at.metric if m.label == "End-of-month forecast") == "€43.21k"
    assert any("80% interval €41.00k – €45.50k" in c.value for c in at.caption)
    body = texts(at)
    assert "Data as of" in body and "Top movers" in body and "Open anomalies" in body
    assert "Platform" in " ".join(p.proto.text for p in at.get("progress"))


def test_empty_mart_says_what_to_do(pipeline):
    at = page("overview").run()
    assert not at.exception
    assert "No cost data in the mart yet" in texts(at)
    assert any(b.label == "Load the demo estate now" for b in at.button)


@pytest.mark.parametrize("name", ["overview", "explorer", "anomalies", "budgets", "gold", "pipeline", "sources"])
def test_every_page_on_a_fresh_install_says_what_to_do(pipeline, name):
    """First start, nothing loaded: each page explains what to do next; no exception, no error alert."""
    at = page(name).run()
    assert not at.exception
    assert [e.value for e in at.error] == []
    shown = texts(at)
    hints = ("No cost data in the mart yet", "No pipeline run yet", "no gold tables yet", "No budgets yet",
             "Nothing delivered yet")  # fmt: skip
    assert any(h in shown for h in hints), shown[:1000]


def test_explorer_filters_grain_and_url_state(seeded):
    at = page("explorer").run()
    assert not at.exception
    total = next(m.value for m in at.metric if m.label == "Total")
    at.selectbox(key="ex_group").set_value("region").run()
    at.segmented_control(key="ex_grain").set_value("weekly").run()
    assert not at.exception
    assert _param(at, "group") == ["region"] and _param(at, "grain") == ["weekly"]
    at.multiselect(key="ex_f_service").set_value(["Storage"]).run()
    assert not at.exception
    filtered = next(m.value for m in at.metric if m.label == "Total")
    assert filtered != total
    assert _param(at, "f.service") == ["Storage"]
    assert {b.label for b in at.get("download_button")} >= {"Download CSV", "Download Parquet"}


def test_explorer_opens_a_shared_view_by_tag(seeded):
    at = page("explorer")
    at.query_params["group"] = "tag:env"
    at.query_params["grain"] = "month"  # a link from before the backend grains: still opens
    at.query_params["metric"] = "amortized"
    at.run()
    assert not at.exception
    assert at.selectbox(key="ex_group").value == "tag:env"
    assert at.segmented_control(key="ex_grain").value == "monthly"
    assert at.segmented_control(key="ex_metric").value == "amortized"
    assert any(m.label == "Members (Tag: env)" and m.value == "3" for m in at.metric)


def test_anomalies_list_chart_and_mark_expected(seeded, pipeline):
    at = page("anomalies").run()
    assert not at.exception
    assert "Root-cause contributors" in texts(at)
    at.radio[0].set_value("expected")
    at.text_input[0].set_value("planned load test")
    next(b for b in at.button if b.label == "Save verdict").click().run()
    assert not at.exception
    with pipeline.engine.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT level, status FROM mart.anomalies")).all())
        feedback = conn.execute(sa.text("SELECT verdict, note FROM mart.anomaly_feedback")).all()
    assert "expected" in statuses.values()
    assert feedback and feedback[0].verdict == "expected" and feedback[0].note == "planned load test"


def test_notification_links_open_the_anomaly_and_the_run_they_name(seeded, pipeline):
    with pipeline.engine.connect() as conn:
        anomalies = conn.execute(
            sa.text("SELECT anomaly_id, charge_date FROM mart.anomalies ORDER BY anomaly_id")
        ).all()
        runs = conn.execute(sa.text("SELECT run_id FROM ops.pipeline_runs ORDER BY started_at")).scalars().all()
    linked = anomalies[-1]
    at = page("anomalies")
    at.query_params["anomaly"] = str(linked.anomaly_id)
    at.run()
    assert not at.exception
    assert at.selectbox(key="an_status").value == "all"
    assert any(linked.charge_date.isoformat() in s.value for s in at.subheader)
    if runs:
        at = page("pipeline")
        at.query_params["run"] = runs[0]
        at.run()
        assert not at.exception
        assert any(f"Steps of {runs[0]}" in m.value for m in at.markdown)


def test_budgets_create_validate_edit_delete(seeded, pipeline):
    at = page("budgets").run()
    assert not at.exception
    assert "Platform" in texts(at)

    def submit(label: str):
        next(b for b in at.button if b.label == label).click().run()
        assert not at.exception

    # invalid: no amount -> a clear error and nothing saved
    at.text_input(key="bf_name_new").set_value("Storage team")
    submit("Create budget")
    assert any("greater than zero" in e.value for e in at.error)
    at.text_input(key="bf_name_new").set_value("Storage team")
    at.selectbox(key="bf_scope_new").set_value("service")
    at.text_input(key="bf_scope_value_new").set_value("Storage")
    at.number_input(key="bf_amount_new").set_value(1200.0)
    submit("Create budget")
    with pipeline.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT budget_id, amount, scope_value FROM mart.budgets WHERE name = 'Storage team'")
        ).one()
    assert float(row.amount) == 1200.0 and row.scope_value == "Storage"
    assert any("created" in s.value for s in at.success)

    at.selectbox(key="bf_choice").set_value("Storage team").run()
    at.number_input(key=f"bf_amount_{row.budget_id}").set_value(1500.0)
    submit("Save changes")
    with pipeline.engine.connect() as conn:
        assert (
            float(conn.execute(sa.text("SELECT amount FROM mart.budgets WHERE name = 'Storage team'")).scalar())
            == 1500.0
        )

    at.selectbox(key="bf_choice").set_value("Storage team").run()
    at.button(key="bf_delete").click().run()
    assert not at.exception
    with pipeline.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mart.budgets WHERE name = 'Storage team'")).scalar() == 0


def test_gold_tables_browse_schema_history_preview(seeded):
    at = page("gold").run()
    assert not at.exception
    assert at.selectbox(key="gold_table").value in ("gold/cost_by_tag", "gold/cost_daily", "gold/resource_tags")
    at.selectbox(key="gold_table").set_value("gold/cost_daily").run()
    assert not at.exception
    rows = next(m.value for m in at.metric if m.label == "Rows")
    assert rows == f"{60 * 60:,}"
    assert not at.error, [e.value for e in at.error]  # guard() turns failures into errors: none expected
    assert int(next(m.value for m in at.metric if m.label == "Partitions")) >= 2  # 60 days span 2+ months
    at.selectbox(key="gold_col_gold/cost_daily").set_value("service_name")
    at.text_input(key="gold_contains_gold/cost_daily").set_value("storage").run()
    assert not at.exception
    assert any("matching rows" in c.value for c in at.caption)
    assert len(at.dataframe) >= 3  # preview, schema, history


def test_pipeline_run_now_shows_progress_and_history(seeded, quick_steps):
    import app.context

    at = page("pipeline").run()
    assert not at.exception
    assert at.multiselect(key="pl_steps").value == list(quick_steps)
    at.button(key="pl_run").click().run()
    assert not at.exception
    launch = app.context.get_launcher().wait(timeout=60)
    assert launch is not None and launch.status == "succeeded", launch
    time.sleep(0.2)
    at.run()
    assert not at.exception
    assert any("succeeded" in s.label and launch.run_id in s.label for s in at.status)
    assert any("Steps of" in m.value for m in at.markdown)
    # Ingest details from the steps' detail JSON: batches, committed / not in bronze, dead letters, inbox files.
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Batches sent"] == "2" and metrics["Committed"] == "1"
    assert metrics["Not in bronze"] == "1" and metrics["Dead letters"] == "2"
    assert any("Inbox files" in m.value for m in at.markdown)
    assert not at.button(key="pl_run").disabled
    # Run history for an operator: a summary of each step's detail instead of its JSON, no "None" cell.
    steps = next(d.value for d in at.dataframe if "summary" in d.value.columns)
    assert steps.columns.tolist() == ["step", "status", "started", "seconds", "rows in", "rows out", "summary"]
    summary = steps.set_index("step")["summary"]
    assert summary["ingest"] == "1 batch (demo), 1 inbox file (1 imported)"
    assert summary["bronze"].startswith("12 rows into bronze, 2 dead letters, 1 batch committed")
    assert steps["status"].tolist() == ["✅ succeeded"] * 3
    runs = next(d.value for d in at.dataframe if "run_id" in d.value.columns and "trigger" in d.value.columns)
    for frame in (steps, runs):
        cells = {str(v) for v in frame.to_numpy().ravel()}
        assert not cells & {"None", "nan", "NaN", "NaT", "<NA>"}, frame
    assert "{" not in "".join(summary)
    assert any(e.label == "Raw step details" for e in at.expander)
    assert len(at.json) == 3  # one per step with details


def test_pipeline_failed_step_is_a_warning_with_its_error(seeded, quick_steps):
    """A failed step's error is shown under the steps table as a warning and code, never as st.error (the
    browser test counts any error alert as a broken page)."""
    import app.context

    def broken(ctx):
        raise RuntimeError("bronze could not read topic costs")

    sys.modules["backend.pipeline.steps"].REGISTRY["bronze"] = broken
    at = page("pipeline").run()
    at.button(key="pl_run").click().run()
    launch = app.context.get_launcher().wait(timeout=60)
    assert launch is not None and launch.status == "failed", launch
    time.sleep(0.2)
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == []
    assert any("Step **bronze** failed" in w.value for w in at.warning)
    assert any("RuntimeError: bronze could not read topic costs" in c.value for c in at.code)
    steps = next(d.value for d in at.dataframe if "summary" in d.value.columns)
    assert steps.set_index("step")["status"].to_dict() == {
        "ingest": "✅ succeeded",
        "bronze": "❌ failed",
        "mart": "⏭️ skipped",
    }
    assert steps.set_index("step").loc["mart", "seconds"] == "–"


def test_pipeline_reconciliation_and_kafka_tabs(seeded, pipeline):
    from backend.mart.reconcile import SILVER_TOTALS_SCHEMA, reconcile

    at = page("pipeline").run()
    assert not at.exception
    assert "No reconciliation yet" in texts(at)
    assert "Messages not yet in bronze" in [m.label for m in at.metric]
    # Against an empty silver every mart day is missing there: the page lists them from list_mismatches.
    reconcile(pipeline.engine, silver_totals=SILVER_TOTALS_SCHEMA.empty_table(), run_id="t")
    at.run()
    assert not at.exception
    assert int(next(m.value for m in at.metric if m.label == "Mismatches")) >= 60
    frames = [d.value for d in at.dataframe if "status" in d.value.columns and "silver_total" in d.value.columns]
    assert frames and set(frames[0]["status"]) == {"missing_in_silver"}


def test_sources_bad_upload_is_refused_and_loads_nothing(pipeline, ui_settings):
    at = page("sources").run()
    assert not at.exception
    assert [m.label for m in at.metric][:4] == ["Postgres", "Kafka", "Lake", "Spark"]
    at.file_uploader(key="src_files").set_value(("costs.csv", b"foo,bar\n1,2\n", "text/csv"))
    next(b for b in at.button if b.label == "Validate and upload").click().run()
    assert not at.exception
    # backend.sources.files' refusal, as it words it; nothing in the inbox, no import offered.
    assert any("refused" in e.value and "is not a cost file Costlake can import" in e.value for e in at.error)
    assert not ui_settings.inbox_dir.exists() or not any(ui_settings.inbox_dir.iterdir())
    assert not any(b.label == "Import now" for b in at.button)


def test_sources_good_focus_file_goes_to_inbox_and_imports(pipeline, ui_settings, quick_steps):
    import app.context

    header = "BillingAccountId,BillingCurrency,ChargePeriodStart,ServiceName,BilledCost,EffectiveCost"
    row = "acct-1,EUR,2026-01-01T00:00:00Z,Storage,1.5,1.5"
    at = page("sources").run()
    at.file_uploader(key="src_files").set_value(("focus.csv", f"{header}\n{row}\n".encode(), "text/csv"))
    next(b for b in at.button if b.label == "Validate and upload").click().run()
    assert not at.exception
    assert any("FOCUS" in s.value and "1 rows" in s.value and "saved to the inbox" in s.value for s in at.success)
    files = list(ui_settings.inbox_dir.iterdir())
    assert len(files) == 1 and files[0].name.endswith("-focus.csv")  # renamed into place, no temp file left

    at.button(key="src_import").click().run()
    assert not at.exception
    launch = app.context.get_launcher().wait(timeout=60)
    assert launch is not None and launch.status == "succeeded", launch
    with pipeline.engine.connect() as conn:
        sources = conn.execute(sa.text("SELECT sources FROM ops.pipeline_runs WHERE run_id = :r"), {"r": launch.run_id})
        assert sources.scalar() == ["inbox"]
    assert any("Import requested" in i.value for i in at.info)


def test_main_navigation_runs(pipeline):
    from streamlit.testing.v1 import AppTest

    from backend.config import REPO_ROOT

    at = AppTest.from_file(str(REPO_ROOT / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Overview"


def test_first_start_loads_the_demo_estate_once(app_server, pipeline, quick_steps, monkeypatch):
    """A served app with no configuration and no successful run yet starts the demo load; a restart does not."""
    from backend.pipeline.launcher import first_start_demo

    monkeypatch.setattr(pipeline.settings, "scheduler_enabled", True)
    assert first_start_demo(pipeline, app_server.launcher) is True
    app_server.launcher.wait(timeout=60)
    with pipeline.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ops.pipeline_runs")).scalar() == 1
    # As after a restart of the server process: the first load succeeded, so it is not repeated.
    assert first_start_demo(pipeline, app_server.launcher) is False
