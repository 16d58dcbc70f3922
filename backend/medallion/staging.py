"""Bronze payloads -> staging rows: the engine decodes each payload (CSV, JSON page, Parquet) in Python workers over Arrow."""

from __future__ import annotations

import os

from pyspark.sql import DataFrame

from backend.medallion import silver
from backend.medallion.parse import BRONZE_INPUT_COLUMNS


def stage(bronze: DataFrame) -> DataFrame:
    """Bronze rows (BRONZE_INPUT_COLUMNS, payloads included) -> one all-text staging row per source row.

    A few large messages would sit in one partition: they are spread over twice the cores first, so the
    decode (pyarrow's CSV / Parquet readers, most of silver's CPU) runs on every core. An undecodable
    payload becomes one failure row that validation quarantines; the rest of the batch is kept.
    """
    spread = bronze.select(*BRONZE_INPUT_COLUMNS).repartition(max(2, 2 * (os.cpu_count() or 1)))
    return silver.explode(spread)


def validated(bronze: DataFrame) -> DataFrame:
    """Bronze rows -> silver.validate's rows for every source row (typed columns, `_mode`, `_rules`)."""
    return silver.validate(stage(bronze))
