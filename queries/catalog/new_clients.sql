-- name = "new_clients"
-- title = "New clients"
-- title_ru = "Новые клиенты"
-- description_ru = "Клиенты, созданные в [from, to), по календарному месяцу created_at, источнику и типу ('unknown' для NULL)."
-- family = "audience"
-- description = """
-- Clients created in [from, to), per calendar month of created_at, source and kind ('unknown' for NULL)."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "stacked_bar", x = "month", y = ["clients"], series = "source" }
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
-- name = "month"
-- [[columns]]
-- name = "source"
-- [[columns]]
-- name = "kind"
-- [[columns]]
-- name = "clients"
-- unit = "clients"
SELECT CAST(date_trunc('month', local(created_at)) AS DATE) AS month,
       COALESCE(source, 'unknown') AS source,
       COALESCE(kind, 'unknown') AS kind,
       COUNT(*) AS clients
FROM clients
WHERE created_at >= $from AND created_at < $to
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
