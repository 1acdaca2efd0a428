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
    SELECT d.client_id, d.closed_at, d.amount, COALESCE(c.source, 'unknown') AS source
    FROM deals d
    LEFT JOIN clients c ON c.client_id = d.client_id
    WHERE d.status = 'won' AND d.closed_at IS NOT NULL
),
rev AS (
    SELECT source, COALESCE(SUM(amount), 0) AS revenue
    FROM won WHERE closed_at >= $from AND closed_at < $to
    GROUP BY source
),
firsts AS (
    SELECT client_id, source, MIN(closed_at) AS first_won
    FROM won WHERE client_id IS NOT NULL
    GROUP BY client_id, source
),
fresh AS (
    SELECT source, COUNT(*) AS new_clients
    FROM firsts WHERE first_won >= $from AND first_won < $to
    GROUP BY source
),
spend AS (
    SELECT COALESCE(source, 'unknown') AS source, COALESCE(SUM(amount), 0) AS spend
    FROM marketing_spend
    WHERE CAST(month AS TIMESTAMP) >= CAST($from AS TIMESTAMP)
      AND CAST(month AS TIMESTAMP) < CAST($to AS TIMESTAMP)
    GROUP BY 1
),
sources AS (
    SELECT source FROM rev UNION SELECT source FROM fresh UNION SELECT source FROM spend
)
SELECT s.source,
       COALESCE(r.revenue, 0) AS revenue,
       COALESCE(n.new_clients, 0) AS new_clients,
       COALESCE(p.spend, 0) AS spend,
       ROUND(COALESCE(p.spend, 0) / NULLIF(n.new_clients, 0), 2) AS cac,
       CAST(COALESCE(r.revenue, 0) - COALESCE(p.spend, 0) AS DOUBLE)
         / CAST(NULLIF(COALESCE(p.spend, 0), 0) AS DOUBLE) AS roi
FROM sources s
LEFT JOIN rev r ON r.source = s.source
LEFT JOIN fresh n ON n.source = s.source
LEFT JOIN spend p ON p.source = s.source
ORDER BY revenue DESC, s.source
