-- name = "login_failures"
-- title = "Failed logins"
-- title_ru = "Неудачные входы"
-- family = "security"
-- description = """
-- Failed login attempts in the audit log in [from, to) (action 'login', outcome not ok), per attempted
-- user and source IP per day. Logins arrive with the web server; until then the result is empty."""
-- roles = ["owner"]
-- chart = { kind = "bar", x = "day", y = ["failures"], series = "user" }
--
-- [[params]]
-- name = "from"
-- type = "timestamp"
-- default = "month_start(to, -12)"
-- description = "start of the period, inclusive"
-- [[params]]
-- name = "to"
-- type = "timestamp"
-- default = "now"
-- description = "end of the period, exclusive"
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
WHERE action = 'login' AND outcome <> 'ok' AND ts >= $from AND ts < $to
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
