-- name = "response_time"
-- title = "Response time"
-- title_ru = "Скорость ответа"
-- description_ru = "Входящие письма и сообщения в мессенджерах в [from, to): ответ — первое исходящее взаимодействие с тем же клиентом строго после них (любой канал, кто угодно) и до as_of. Отвеченные в течение 7 дней: минуты до ответа засчитываются ответившему; точные медиана и 90-й перцентиль по сотруднику. Не отвеченные за 7 дней и старше 7 дней на as_of — «без ответа» у текущего ответственного за клиента ('unknown', если клиента или ответственного нет)."
-- family = "staff"
-- description = """
-- Inbound e-mail and messenger interactions in [from, to): the answer is the first outbound interaction
-- with the same client strictly after it (any channel, by anyone, ties by interaction_id) and before
-- as_of. Answered within 7 days (inclusive): minutes until the answer, credited to the staff who answered;
-- exact median and p90 per staff. Not answered within 7 days and at least 7 days old at as_of: counted
-- as unanswered for the client's current owner (`unknown` for a message with no client, or a client
-- with no owner). Younger unanswered messages are in neither group."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "staff", y = ["median_minutes", "p90_minutes"] }
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
-- name = "as_of"
-- type = "timestamp"
-- default = "now"
-- description = "the instant the metric is computed as of (default: the snapshot time)"
-- description_ru = "момент, на который считается показатель (по умолчанию — время снимка)"
--
-- [[columns]]
-- name = "staff"
-- [[columns]]
-- name = "answered"
-- unit = "messages"
-- [[columns]]
-- name = "median_minutes"
-- unit = "min"
-- [[columns]]
-- name = "p90_minutes"
-- unit = "min"
-- [[columns]]
-- name = "unanswered"
-- unit = "messages"
WITH messages AS (
    -- one scan of the view (DataFusion recomputes a CTE at every use): each message is either answered
    -- in time (credited to who answered) or unanswered and old enough (counted for the client's owner)
    SELECT CASE WHEN i.answered_at < $as_of
                THEN COALESCE(CAST(i.answered_by AS VARCHAR), 'unknown')
                ELSE COALESCE(CAST(c.owner_id AS VARCHAR), 'unknown') END AS staff,
           CASE WHEN i.answered_at < $as_of
                THEN (date_part('epoch', i.answered_at) - date_part('epoch', i.occurred_at)) / 60.0 END AS minutes,
           CASE WHEN (i.answered_at IS NULL OR i.answered_at >= $as_of)
                 AND i.occurred_at + INTERVAL '7 days' <= $as_of THEN 1 ELSE 0 END AS unanswered
    FROM inbound_answers i
    LEFT JOIN clients c ON c.client_id = i.client_id
    WHERE i.occurred_at >= $from AND i.occurred_at < $to
)
-- Exact continuous percentiles over the answered messages (linear interpolation at p·(n−1)): the
-- engine's percentile_exact, which ignores the unanswered rows' NULL minutes.
SELECT staff,
       COUNT(minutes) AS answered,
       percentile_exact(minutes, 0.5) AS median_minutes,
       percentile_exact(minutes, 0.9) AS p90_minutes,
       SUM(unanswered) AS unanswered
FROM messages
WHERE minutes IS NOT NULL OR unanswered = 1
GROUP BY staff
ORDER BY staff
