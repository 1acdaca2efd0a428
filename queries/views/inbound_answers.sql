-- Every inbound e-mail or messenger interaction with a client, and its answer: the first outbound
-- interaction with the same client strictly after it and within 7 days (inclusive), any channel, by
-- anyone, ties by interaction_id. answered_at is NULL when there was none (always, for a message with
-- no client).
-- Used by response_time and manager_scorecard.
-- A join on the client bounded by the 7 days, not a window over each client's interactions: DataFusion
-- 55 evaluates such a window at ~0.8 µs a row (most of response_time's time); the join's pairs are each
-- message's outbound interactions with the client in the 7 days after it, not the client's whole history.
WITH inbound AS (
    SELECT interaction_id, client_id, occurred_at,
           -- the deadline once per message, so the join compares plain timestamps
           occurred_at + INTERVAL '7 days' AS deadline
    FROM interactions
    WHERE direction = 'inbound' AND channel IN ('email', 'messenger')
),
outbound AS (
    SELECT interaction_id, client_id, occurred_at, staff_id
    FROM interactions
    WHERE direction = 'outbound' AND client_id IS NOT NULL
)
-- a message with no client has no answer "with the same client": unanswered, for owner unknown
SELECT i.interaction_id, i.client_id, i.occurred_at,
       first_value(o.staff_id ORDER BY o.occurred_at, o.interaction_id) AS answered_by,
       MIN(o.occurred_at) AS answered_at
FROM inbound i
LEFT JOIN outbound o
  ON o.client_id = i.client_id AND o.occurred_at > i.occurred_at AND o.occurred_at <= i.deadline
GROUP BY i.interaction_id, i.client_id, i.occurred_at
