-- name = "after_hours"
-- title = "Activity outside working hours"
-- title_ru = "Работа в нерабочее время"
-- description_ru = "Запросы и выгрузки из журнала аудита в [from, to), сделанные в нерабочее время (вне понедельника–пятницы 09:00–19:00 в часовом поясе отчётов), по пользователям: сколько и сколько из них отклонено."
-- family = "security"
-- description = """
-- Queries and exports in the audit log in [from, to) made outside working hours (Monday–Friday
-- 09:00–19:00 in the reporting zone), per acting user: how many, and how many were refused."""
-- roles = ["owner"]
-- chart = { kind = "bar", x = "actor", y = ["actions"] }
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
-- name = "actor"
-- [[columns]]
-- name = "actions"
-- unit = "actions"
-- [[columns]]
-- name = "refused"
-- unit = "actions"
SELECT actor, COUNT(*) AS actions, SUM(CASE WHEN outcome <> 'ok' THEN 1 ELSE 0 END) AS refused
FROM audit_log
WHERE action IN ('query', 'export')
  AND ts >= $from AND ts < $to
  AND (date_part('dow', local(ts)) IN (0, 6) OR date_part('hour', local(ts)) < 9 OR date_part('hour', local(ts)) >= 19)
GROUP BY actor
ORDER BY actions DESC, actor
