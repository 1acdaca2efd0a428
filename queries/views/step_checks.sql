-- Every stage change with a non-NULL from_stage (a step), and whether it was compliant: changed_by had
-- an outbound interaction (any channel) with the deal's client in [the deal's previous change, this
-- change), or from the deal's created_at when no earlier change is recorded.
-- Used by step_compliance and manager_scorecard.
WITH ordered AS (
    -- one ordered pass instead of a window per deal: the previous row is the same deal's previous
    -- change when its deal_id matches
    SELECT change_id, deal_id, from_stage, changed_at, changed_by,
           LAG(deal_id) OVER (ORDER BY deal_id, changed_at, change_id) AS prev_deal,
           LAG(changed_at) OVER (ORDER BY deal_id, changed_at, change_id) AS prev_change_at
    FROM deal_stage_changes
),
ch AS (
    SELECT change_id, deal_id, from_stage, changed_at, changed_by,
           CASE WHEN prev_deal = deal_id THEN prev_change_at END AS prev_at
    FROM ordered
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
