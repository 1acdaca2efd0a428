-- Every stage change with a non-NULL from_stage (a step), and whether it was compliant: changed_by had
-- an outbound interaction (any channel) with the deal's client in [the deal's previous change, this
-- change), or from the deal's created_at when no earlier change is recorded.
-- Used by step_compliance and manager_scorecard.
WITH ch AS (
    SELECT change_id, deal_id, from_stage, changed_at, changed_by,
           LAG(changed_at) OVER (PARTITION BY deal_id ORDER BY changed_at, change_id) AS prev_at
    FROM deal_stage_changes
),
steps AS (
    SELECT ch.change_id, ch.deal_id, ch.changed_by, d.client_id, ch.changed_at,
           COALESCE(ch.prev_at, d.created_at) AS window_start
    FROM ch JOIN deals d ON d.deal_id = ch.deal_id
    WHERE ch.from_stage IS NOT NULL
),
compliant AS (
    SELECT DISTINCT s.change_id
    FROM steps s
    JOIN interactions i
      ON i.staff_id = s.changed_by AND i.client_id = s.client_id AND i.direction = 'outbound'
     AND i.occurred_at >= s.window_start AND i.occurred_at < s.changed_at
)
SELECT s.change_id, s.deal_id, s.changed_by, s.changed_at, c.change_id IS NOT NULL AS compliant
FROM steps s LEFT JOIN compliant c ON c.change_id = s.change_id
