"""Time the catalog's metrics on the plaintext export with DuckDB and Polars; print JSON.

Input: the queries.json written by kartoteka-bench (tables, shared views, each metric's SQL with its
parameters already substituted as literals). Both engines get the same SQL text; a query an engine
cannot run is reported with its error, not dropped silently.
"""
import json
import sys
import time

import duckdb
import polars as pl

spec = json.load(open(sys.argv[1]))
base = spec["dir"]
runs = spec["runs"]
out = {"duckdb": {}, "polars": {}, "versions": {"duckdb": duckdb.__version__, "polars": pl.__version__}}

con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
for t in spec["tables"]:
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{base}/{t}.parquet')")
for v in spec["views"]:
    try:
        con.execute(f"CREATE VIEW {v['name']} AS {v['sql']}")
    except Exception as e:  # the metrics using it will report their own errors
        out["duckdb"]["view:" + v["name"]] = {"error": str(e)[:300]}
for q in spec["queries"]:
    best = None
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            con.execute(q["sql"]).to_arrow_table()
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        out["duckdb"][q["metric"]] = {"best_seconds": best}
    except Exception as e:  # report, do not hide
        out["duckdb"][q["metric"]] = {"error": str(e)[:300]}

ctx = pl.SQLContext()
for t in spec["tables"]:
    ctx.register(t, pl.scan_parquet(f"{base}/{t}.parquet"))
for v in spec["views"]:
    try:
        ctx.register(v["name"], ctx.execute(v["sql"]))
    except Exception as e:
        out["polars"]["view:" + v["name"]] = {"error": str(e)[:300]}
for q in spec["queries"]:
    best = None
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            ctx.execute(q["sql"]).collect()
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        out["polars"][q["metric"]] = {"best_seconds": best}
    except Exception as e:
        out["polars"][q["metric"]] = {"error": str(e)[:300]}

print(json.dumps(out))
