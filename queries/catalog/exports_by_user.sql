-- name = "exports_by_user"
-- title = "Exports by user"
-- title_ru = "Выгрузки по пользователям"
-- description_ru = "Выгрузки из журнала аудита в [from, to) (действия 'export' и 'web.export' — выгрузки CSV с панелей) по пользователям и дням: число выгрузок, строк и разных клиентов (из подробностей записи)."
-- family = "security"
-- description = """
-- Exports in the audit log in [from, to) (actions 'export' and 'web.export', the dashboard's CSV
-- downloads), per user per day: exports, rows and distinct clients exported (from the entry's details;
-- 0 where the entry does not count them)."""
-- roles = ["owner"]
-- chart = { kind = "bar", x = "day", y = ["rows"], series = "actor" }
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
-- description = "end of the period, exclusive (default: now — the audit log runs ahead of any snapshot)"
-- description_ru = "конец периода, не включается (по умолчанию — текущий момент: журнал аудита опережает снимки)"
--
-- [[columns]]
-- name = "day"
-- [[columns]]
-- name = "actor"
-- [[columns]]
-- name = "exports"
-- unit = "exports"
-- [[columns]]
-- name = "rows"
-- unit = "rows"
-- [[columns]]
-- name = "clients"
-- unit = "clients"
SELECT CAST(date_trunc('day', local(ts)) AS DATE) AS day, actor, COUNT(*) AS exports,
       COALESCE(SUM(CAST(regexp_match(details, '"rows":([0-9]+)')[1] AS BIGINT)), 0) AS "rows",
       COALESCE(SUM(CAST(regexp_match(details, '"clients":([0-9]+)')[1] AS BIGINT)), 0) AS clients
FROM audit_log
WHERE action IN ('export', 'web.export') AND ts >= $from AND ts < $to
GROUP BY 1, 2
ORDER BY 1, 2
