-- name = "response_time"
-- title = "Response time"
-- family = "staff"
-- description = """
-- Inbound e-mail and messenger interactions in [from, to): the answer is the first outbound interaction
-- with the same client strictly after it (any channel, by anyone, ties by interaction_id) and before
-- as_of. Answered within 7 days (inclusive): minutes until the answer, credited to the staff who answered;
-- exact median and p90 per staff. Not answered within 7 days and at least 7 days old at as_of: counted
-- as unanswered for the client's current owner. Younger unanswered messages are in neither group."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "staff", y = ["median_minutes", "p90_minutes"] }
--
-- [[params]]
-- name = "from"
-- type = "timestamp"
-- default = "month_start(to, -12)"
-- description = "start of the period, inclusive (default: first day of the month 12 months before `to`)"
-- [[params]]
-- name = "to"
-- type = "timestamp"
-- default = "now"
-- description = "end of the period, exclusive (default: the snapshot time)"
-- [[params]]
-- name = "as_of"
-- type = "timestamp"
-- default = "now"
-- description = "the instant the metric is computed as of (default: the snapshot time)"
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
WITH answers AS (
    SELECT interaction_id, COALESCE(CAST(answered_by AS VARCHAR), 'unknown') AS staff,
           (date_part('epoch', answered_at) - date_part('epoch', occurred_at)) / 60.0 AS minutes
    FROM inbound_answers
    WHERE occurred_at >= $from AND occurred_at < $to AND answered_at < $as_of
),
-- Exact continuous percentiles (DataFusion 55's percentile_cont truncates the fraction to six digits).
ranked AS (
    SELECT staff, minutes,
           CAST(ROW_NUMBER() OVER (PARTITION BY staff ORDER BY minutes) - 1 AS DOUBLE) AS rn,
           CAST(COUNT(*) OVER (PARTITION BY staff) - 1 AS DOUBLE) AS last
    FROM answers
),
pct AS (
    SELECT staff, COUNT(*) AS answered,
           MIN(CASE WHEN rn = floor(0.5 * last) THEN minutes END)
             + (MIN(CASE WHEN rn = ceil(0.5 * last) THEN minutes END)
                - MIN(CASE WHEN rn = floor(0.5 * last) THEN minutes END))
               * (0.5 * last - floor(0.5 * last)) AS median_minutes,
           MIN(CASE WHEN rn = floor(0.9 * last) THEN minutes END)
             + (MIN(CASE WHEN rn = ceil(0.9 * last) THEN minutes END)
                - MIN(CASE WHEN rn = floor(0.9 * last) THEN minutes END))
               * (0.9 * last - floor(0.9 * last)) AS p90_minutes
    FROM ranked GROUP BY staff, last
),
unanswered AS (
    SELECT COALESCE(CAST(c.owner_id AS VARCHAR), 'unknown') AS staff, COUNT(*) AS unanswered
    FROM inbound_answers i
    LEFT JOIN clients c ON c.client_id = i.client_id
    WHERE i.occurred_at >= $from AND i.occurred_at < $to
      AND i.occurred_at + INTERVAL '7 days' <= $as_of
      AND (i.answered_at IS NULL OR i.answered_at >= $as_of)
    GROUP BY 1
),
staff_ AS (SELECT staff FROM pct UNION SELECT staff FROM unanswered)
SELECT s.staff, COALESCE(p.answered, 0) AS answered, p.median_minutes, p.p90_minutes,
       COALESCE(u.unanswered, 0) AS unanswered
FROM staff_ s
LEFT JOIN pct p ON p.staff = s.staff
LEFT JOIN unanswered u ON u.staff = s.staff
ORDER BY s.staff
