-- name = "activity_by_manager"
-- title = "Activity by manager"
-- title_ru = "Активность менеджеров"
-- description_ru = "По каждому сотруднику и дню (или неделе ISO, с понедельника) по времени occurred_at в часовом поясе отчётов — взаимодействия в [from, to): исходящие звонки, письма, сообщения в мессенджерах, встречи и минуты разговоров (все звонки сотрудника, входящие и исходящие). Сотрудник и период без таких взаимодействий строки не дают; взаимодействия без сотрудника образуют свою группу (staff_id NULL, менеджер 'unknown')."
-- family = "staff"
-- description = """
-- Per staff member and day (or ISO week, starting Monday) of occurred_at (in the reporting zone), interactions in
-- [from, to): outbound calls, outbound e-mails, outbound messenger messages, outbound meetings, and
-- call minutes = duration of all calls (inbound and outbound) the staff member handled, in minutes.
-- A staff member and period with none of these has no row; interactions without a staff member form
-- their own group (staff_id NULL, manager 'unknown')."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "stacked_bar", x = "period", y = ["calls", "emails", "messages", "meetings"], series = "manager" }
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
-- [[params]]
-- name = "grain"
-- type = "text"
-- default = "day"
-- allowed = ["day", "week"]
-- description = "day or week"
-- description_ru = "день (day) или неделя ISO с понедельника (week)"
--
-- [[columns]]
-- name = "staff_id"
-- [[columns]]
-- name = "manager"
-- [[columns]]
-- name = "period"
-- description = "the day, or the Monday of the week"
-- [[columns]]
-- name = "calls"
-- [[columns]]
-- name = "emails"
-- [[columns]]
-- name = "messages"
-- [[columns]]
-- name = "meetings"
-- [[columns]]
-- name = "call_minutes"
-- unit = "min"
WITH counted AS (
    SELECT i.staff_id,
           CAST(CASE WHEN $grain = 'week' THEN date_trunc('week', local(i.occurred_at))
                     ELSE date_trunc('day', local(i.occurred_at)) END AS DATE) AS period,
           i.channel, i.direction, i.duration_s
    FROM interactions i
    WHERE i.occurred_at >= $from AND i.occurred_at < $to
      AND (i.direction = 'outbound' OR i.channel = 'call')
)
SELECT c.staff_id,
       COALESCE(s.full_name, 'unknown') AS manager,
       c.period,
       SUM(CASE WHEN c.channel = 'call' AND c.direction = 'outbound' THEN 1 ELSE 0 END) AS calls,
       SUM(CASE WHEN c.channel = 'email' AND c.direction = 'outbound' THEN 1 ELSE 0 END) AS emails,
       SUM(CASE WHEN c.channel = 'messenger' AND c.direction = 'outbound' THEN 1 ELSE 0 END) AS messages,
       SUM(CASE WHEN c.channel = 'meeting' AND c.direction = 'outbound' THEN 1 ELSE 0 END) AS meetings,
       CAST(SUM(CASE WHEN c.channel = 'call' THEN COALESCE(c.duration_s, 0) ELSE 0 END) AS DOUBLE) / 60.0 AS call_minutes
FROM counted c
LEFT JOIN staff s ON s.staff_id = c.staff_id
GROUP BY c.staff_id, s.full_name, c.period
ORDER BY c.period, c.staff_id
