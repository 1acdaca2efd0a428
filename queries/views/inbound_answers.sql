-- Every inbound e-mail or messenger interaction with a client, and its answer: the first outbound
-- interaction with the same client strictly after it and within 7 days (inclusive), any channel, by
-- anyone, ties by interaction_id. answered_at is NULL when there was none (always, for a message with
-- no client).
-- Used by response_time and manager_scorecard.
-- One pass per client instead of a range join: in (occurred_at, outbound first, interaction_id) order
-- the earliest outbound among the rows after an inbound message is the first one strictly later.
WITH ordered AS (
    SELECT interaction_id, client_id, occurred_at, direction, channel,
           -- a running frame in reverse order streams; an "until the end" frame would not
           MIN(CASE WHEN direction = 'outbound' THEN occurred_at END) OVER (
               PARTITION BY client_id
               ORDER BY occurred_at DESC, CASE WHEN direction = 'outbound' THEN 0 ELSE 1 END DESC,
                        interaction_id DESC
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS next_out_at
    -- a message with no client has no answer "with the same client": unanswered, for owner unknown
    FROM interactions
),
first_out AS (
    -- the first outbound interaction of each client at each instant (ties by interaction_id); an
    -- aggregate and a key join, because a window over that many tiny partitions is slow in DataFusion 55
    SELECT f.client_id, f.occurred_at, o.staff_id
    FROM (
        SELECT client_id, occurred_at, MIN(interaction_id) AS first_id
        FROM interactions
        WHERE direction = 'outbound' AND client_id IS NOT NULL
        GROUP BY client_id, occurred_at
    ) f
    JOIN interactions o ON o.interaction_id = f.first_id
)
SELECT i.interaction_id, i.client_id, i.occurred_at, o.staff_id AS answered_by, o.occurred_at AS answered_at
FROM ordered i
LEFT JOIN first_out o
  ON o.client_id = i.client_id AND o.occurred_at = i.next_out_at
 AND i.next_out_at <= i.occurred_at + INTERVAL '7 days'
WHERE i.direction = 'inbound' AND i.channel IN ('email', 'messenger')
