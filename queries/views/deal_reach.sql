-- Every deal with recorded stage changes: the position of the furthest non-lost stage of its current
-- pipeline it ever entered (per deal_stage_changes). Stages are keyed by (pipeline, stage): a change
-- recorded in another pipeline (before the deal moved) does not reach a stage of the same name in this
-- one; a change whose pipeline the CRM did not record counts as the deal's own. A deal "reached" a
-- stage when max_position >= the stage's position. Used by funnel_conversion and forecast.
SELECT d.deal_id, d.pipeline, MAX(st.position) AS max_position
FROM deals d
JOIN deal_stage_changes ch ON ch.deal_id = d.deal_id AND COALESCE(ch.pipeline, d.pipeline) = d.pipeline
JOIN pipeline_stages st ON st.pipeline = d.pipeline AND st.stage = ch.to_stage AND st.kind <> 'lost'
GROUP BY d.deal_id, d.pipeline
