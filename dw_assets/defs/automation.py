"""The automation condition sensor, on by default: it evaluates the gold and report assets' AutomationConditions
(dw_assets/defs/reports.py). Dagster's implicit `default_automation_condition_sensor` starts STOPPED, so a fresh
instance would never refresh reports without someone switching it on in the UI.
"""
import dagster as dg

automation_condition_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    # Every asset: only those with an automation condition are evaluated; new ones are covered without edits.
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    # dagster.yaml limits this lane to one run at a time, so checks and reports never crowd out ingestion.
    run_tags={"dw/lane": "automation"},
    description="Evaluates every asset's AutomationCondition (gold and reports refresh after silver changed).",
)
