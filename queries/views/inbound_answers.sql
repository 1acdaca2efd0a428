-- Every inbound e-mail or messenger interaction with a client, and its answer: the first outbound
-- interaction with the same client strictly after it and within 7 days (inclusive), any channel, by
-- anyone, ties by interaction_id. answered_at is NULL when there was none.
-- Used by response_time and manager_scorecard.
WITH inbound AS (
    SELECT interaction_id, client_id, occurred_at
    FROM interactions
    WHERE direction = 'inbound' AND channel IN ('email', 'messenger') AND client_id IS NOT NULL
),
candidates AS (
    SELECT i.interaction_id, o.staff_id, o.occurred_at AS answered_at,
           ROW_NUMBER() OVER (PARTITION BY i.interaction_id ORDER BY o.occurred_at, o.interaction_id) AS k
    FROM inbound i
    JOIN interactions o
      ON o.client_id = i.client_id AND o.direction = 'outbound'
     AND o.occurred_at > i.occurred_at AND o.occurred_at <= i.occurred_at + INTERVAL '7 days'
)
SELECT i.interaction_id, i.client_id, i.occurred_at, c.staff_id AS answered_by, c.answered_at
FROM inbound i
LEFT JOIN candidates c ON c.interaction_id = i.interaction_id AND c.k = 1
