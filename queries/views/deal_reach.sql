-- Every deal with recorded stage changes: the position of the furthest non-lost stage of its pipeline it
-- ever entered (per deal_stage_changes). A deal "reached" a stage when max_position >= the stage's
-- position. Used by funnel_conversion and forecast.
SELECT d.deal_id, d.pipeline, MAX(st.position) AS max_position
FROM deals d
JOIN deal_stage_changes ch ON ch.deal_id = d.deal_id
JOIN pipeline_stages st ON st.pipeline = d.pipeline AND st.stage = ch.to_stage AND st.kind <> 'lost'
GROUP BY d.deal_id, d.pipeline
