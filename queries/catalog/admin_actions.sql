-- name = "admin_actions"
-- title = "Administrative actions"
-- title_ru = "Действия администраторов"
-- description_ru = "Все административные действия из журнала аудита в [from, to) — изменения пользователей и ролей, сброс паролей, смена ключей, сборка мусора — новые первыми: кто, над чем и чем закончилось."
-- family = "security"
-- description = """
-- Every administrative action in the audit log in [from, to) — user and role changes, password resets,
-- key rotations, garbage collection — newest first, with who did it, to what, and how it ended."""
-- roles = ["owner"]
-- chart = { kind = "table", x = "ts", y = ["action"] }
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
-- name = "seq"
-- [[columns]]
-- name = "ts"
-- [[columns]]
-- name = "actor"
-- [[columns]]
-- name = "action"
-- [[columns]]
-- name = "target"
-- [[columns]]
-- name = "outcome"
-- [[columns]]
-- name = "details"
SELECT seq, ts, actor, action, target, outcome, details
FROM audit_log
WHERE (action LIKE 'users.%' OR action LIKE 'keys.%' OR action = 'gc')
  AND ts >= $from AND ts < $to
ORDER BY seq DESC
