-- name = "revenue_by_source"
-- title = "Revenue, CAC and ROI by source"
-- title_ru = "Выручка, CAC и ROI по каналам"
-- description_ru = "Только целые месяцы: from и to — начала месяцев. По источнику клиента ('unknown' для NULL): выигранная выручка, закрытая в [from, to), от всех клиентов источника; новые клиенты — те, чья первая выигранная сделка попала в период; расходы — маркетинговые расходы месяцев периода на источник (0, если их нет); CAC = расходы / новые клиенты (до копеек); ROI = (выручка − расходы) / расходы."
-- family = "sales"
-- description = """
-- Whole months only: from and to must be month starts. Per clients.source ('unknown' for NULL): won
-- revenue closed in [from, to) from all clients of that source; new clients = clients whose first won
-- deal falls in the period; spend = marketing spend of the period's months for that source (0 when
-- none); CAC = spend / new clients (rounded to kopecks); ROI = (revenue - spend) / spend."""
-- roles = ["owner", "analyst"]
-- chart = { kind = "bar", x = "source", y = ["revenue", "spend"] }
--
-- [[params]]
-- name = "from"
-- type = "timestamp"
-- default = "month_start(to, -12)"
-- align = "month"
-- description = "first month of the period (a month start; default: 12 months before `to`)"
-- description_ru = "первый месяц периода (начало месяца; по умолчанию — за 12 месяцев до `to`)"
-- [[params]]
-- name = "to"
-- type = "timestamp"
-- default = "month_start(now, 0)"
-- align = "month"
-- description = "end of the period, exclusive (a month start; default: the start of the current month)"
-- description_ru = "конец периода, не включается (начало месяца; по умолчанию — начало текущего месяца)"
--
-- [[columns]]
-- name = "source"
-- [[columns]]
-- name = "revenue"
-- unit = "money"
-- [[columns]]
-- name = "new_clients"
-- unit = "clients"
-- [[columns]]
-- name = "spend"
-- unit = "money"
-- [[columns]]
-- name = "cac"
-- unit = "money"
-- [[columns]]
-- name = "roi"
-- unit = "ratio"
WITH won AS (
    -- Read once: DataFusion computes a CTE once per reference, and `won` was read twice (revenue in
    -- the period; each client's first win). Per (source, client) the first win and the period's
    -- deals, then per source both figures; a source is listed when it has revenue, new clients or
    -- spend in the period.
    SELECT d.client_id, d.closed_at, d.amount, COALESCE(c.source, 'unknown') AS source
    FROM deals d
    LEFT JOIN clients c ON c.client_id = d.client_id
    WHERE d.status = 'won' AND d.closed_at IS NOT NULL
),
per_client AS (
    -- deals without a client form one group per source: their revenue counts, they are no client
    SELECT source, client_id, MIN(closed_at) AS first_won,
           SUM(CASE WHEN closed_at >= $from AND closed_at < $to THEN amount END) AS period_amount,
           COUNT(CASE WHEN closed_at >= $from AND closed_at < $to THEN 1 END) AS period_deals
    FROM won
    GROUP BY source, client_id
),
by_source AS (
    SELECT source,
           CAST(COALESCE(SUM(period_amount), 0) AS DECIMAL(28, 2)) AS revenue,
           SUM(period_deals) AS period_deals,
           COUNT(CASE WHEN client_id IS NOT NULL AND first_won >= $from AND first_won < $to THEN 1 END)
             AS new_clients
    FROM per_client
    GROUP BY source
),
spend AS (
    SELECT COALESCE(source, 'unknown') AS source, COALESCE(SUM(amount), 0) AS spend
    FROM marketing_spend
    WHERE CAST(month AS TIMESTAMP) >= CAST($from AS TIMESTAMP)
      AND CAST(month AS TIMESTAMP) < CAST($to AS TIMESTAMP)
    GROUP BY 1
),
both_sides AS (
    SELECT COALESCE(r.source, p.source) AS source,
           COALESCE(r.revenue, 0) AS revenue,
           COALESCE(r.new_clients, 0) AS new_clients,
           COALESCE(p.spend, 0) AS spend
    FROM (SELECT * FROM by_source WHERE period_deals > 0 OR new_clients > 0) r
    FULL JOIN spend p ON p.source = r.source
)
SELECT source, revenue, new_clients, spend,
       ROUND(spend / NULLIF(new_clients, 0), 2) AS cac,
       CAST(revenue - spend AS DOUBLE) / CAST(NULLIF(spend, 0) AS DOUBLE) AS roi
FROM both_sides
ORDER BY revenue DESC, source
