-- name = "win_rate"
-- title = "Win rate"
-- title_ru = "Доля выигранных"
-- description_ru = "Сделки, закрытые (выигранные или проигранные) в [from, to), по closed_by и всего (менеджер = 'all'): доля выигранных = won / (won + lost). closed_by NULL — группа 'unknown'."
-- family = "sales"
-- description = """
-- Deals closed (won or lost) in [from, to), per closed_by and overall (manager = 'all'):
-- win_rate = won / (won + lost). NULL closed_by is the group 'unknown'."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "manager", y = ["win_rate"] }
--
-- [[params]]
-- name = "from"
-- type = "timestamp"
-- default = "month_start(to, -12)"
-- description = "start of the period, inclusive (default: first day of the month 12 months before `to`)"
-- description_ru = "начало периода, включительно (по умолчанию — первое число месяца за 12 месяцев до `to`)"
-- [[params]]
-- name = "to"
-- type = "timestamp"
-- default = "now"
-- description = "end of the period, exclusive (default: the snapshot time)"
-- description_ru = "конец периода, не включается (по умолчанию — время снимка)"
--
-- [[columns]]
-- name = "manager"
-- description = "staff id of closed_by, 'unknown', or 'all' for the overall row"
-- [[columns]]
-- name = "won"
-- unit = "deals"
-- [[columns]]
-- name = "lost"
-- unit = "deals"
-- [[columns]]
-- name = "win_rate"
-- unit = "ratio"
WITH closed AS (
    SELECT COALESCE(CAST(closed_by AS VARCHAR), 'unknown') AS manager, status
    FROM deals
    WHERE status IN ('won', 'lost') AND closed_at >= $from AND closed_at < $to
),
per AS (
    SELECT manager, SUM(CASE WHEN status = 'won' THEN 1 ELSE 0 END) AS won,
           SUM(CASE WHEN status = 'lost' THEN 1 ELSE 0 END) AS lost, 0 AS overall
    FROM closed GROUP BY manager
    UNION ALL
    SELECT 'all', COALESCE(SUM(CASE WHEN status = 'won' THEN 1 ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN status = 'lost' THEN 1 ELSE 0 END), 0), 1
    FROM closed
)
SELECT manager, won, lost,
       CAST(won AS DOUBLE) / CAST(NULLIF(won + lost, 0) AS DOUBLE) AS win_rate
FROM per
ORDER BY overall, manager
