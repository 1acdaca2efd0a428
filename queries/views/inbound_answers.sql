-- Every inbound e-mail or messenger interaction with a client, and its answer: the first outbound
-- interaction with the same client strictly after it and within 7 days (inclusive), any channel, by
-- anyone, ties by interaction_id. answered_at is NULL when there was none.
-- Used by response_time and manager_scorecard.
-- One pass per client instead of a range join: in (occurred_at, outbound first, interaction_id) order
-- the earliest outbound among the rows after an inbound message is the first one strictly later.
WITH ordered AS (
    SELECT interaction_id, client_id, occurred_at, direction, channel,
           MIN(CASE WHEN direction = 'outbound' THEN occurred_at END) OVER (
               PARTITION BY client_id
               ORDER BY occurred_at, CASE WHEN direction = 'outbound' THEN 0 ELSE 1 END, interaction_id
               ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS next_out_at
    FROM interactions
    WHERE client_id IS NOT NULL
),
first_out AS (
    -- the first outbound interaction of each client at each instant (ties by interaction_id)
    SELECT client_id, occurred_at, staff_id FROM (
        SELECT client_id, occurred_at, staff_id,
               ROW_NUMBER() OVER (PARTITION BY client_id, occurred_at ORDER BY interaction_id) AS k
        FROM interactions
        WHERE direction = 'outbound' AND client_id IS NOT NULL
    ) WHERE k = 1
)
SELECT i.interaction_id, i.client_id, i.occurred_at, o.staff_id AS answered_by, o.occurred_at AS answered_at
FROM ordered i
LEFT JOIN first_out o
  ON o.client_id = i.client_id AND o.occurred_at = i.next_out_at
 AND i.next_out_at <= i.occurred_at + INTERVAL '7 days'
WHERE i.direction = 'inbound' AND i.channel IN ('email', 'messenger')
