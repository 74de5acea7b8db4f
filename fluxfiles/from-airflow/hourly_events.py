# The Airflow DAGs this example ports (kept for comparison; flux does not read them).
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.sensors.external_task import ExternalTaskSensor
from airflow.sensors.filesystem import FileSensor

HOUR = "{{ data_interval_start.strftime('%Y-%m-%dT%H') }}"

with DAG(
    dag_id="hourly_events",
    schedule="@hourly",
    start_date=datetime(2024, 3, 1),
    catchup=True,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
):
    wait_for_export = FileSensor(
        task_id="wait_for_export",
        filepath=f"landing/{HOUR}.done",
        poke_interval=2,
        timeout=3600,
        mode="reschedule",
    )
    ingest = BashOperator(
        task_id="ingest",
        bash_command=f"mkdir -p data/events && grep -v '^#' landing/{HOUR}.csv | sort > data/events/{HOUR}.csv",
    )
    wait_for_export >> ingest

with DAG(
    dag_id="daily_events",
    schedule="@daily",
    start_date=datetime(2024, 3, 1),
    catchup=True,
):
    # One sensor per hour of the day: the daily DAG cannot see the hourly DAG's files.
    hours = [
        ExternalTaskSensor(
            task_id=f"wait_hour_{h:02d}",
            external_dag_id="hourly_events",
            external_task_id="ingest",
            execution_delta=timedelta(hours=-h),
        )
        for h in range(24)
    ]
    daily = BashOperator(
        task_id="daily",
        bash_command="mkdir -p data/daily && cat data/events/{{ ds }}T*.csv | cut -d, -f3 | sort | uniq -c "
        "| awk '{ print $2 \",\" $1 }' > data/daily/{{ ds }}.csv",
    )
    hours >> daily
