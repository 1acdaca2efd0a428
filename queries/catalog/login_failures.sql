-- name = "login_failures"
-- title = "Failed logins"
-- title_ru = "Неудачные входы"
-- description_ru = "Неудачные попытки входа из журнала аудита в [from, to) (действия 'login' и 'web.sign-in', итог не ok: каждый неудачный шаг входа), по логину, который пытались использовать, адресу и дню."
-- family = "security"
-- description = """
-- Failed sign-in attempts in the audit log in [from, to) (actions 'login' and 'web.sign-in', outcome
-- not ok: every failed step of the web door's sign-in), per attempted user and source IP per day."""
-- roles = ["owner"]
-- chart = { kind = "bar", x = "day", y = ["failures"], series = "user" }
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
-- name = "user"
-- [[columns]]
-- name = "ip"
-- [[columns]]
-- name = "failures"
-- unit = "attempts"
SELECT CAST(date_trunc('day', local(ts)) AS DATE) AS day,
       target AS "user",
       COALESCE(regexp_match(details, '"ip":"([^"]*)"')[1], 'unknown') AS ip,
       COUNT(*) AS failures
FROM audit_log
WHERE action IN ('login', 'web.sign-in') AND outcome <> 'ok' AND ts >= $from AND ts < $to
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
