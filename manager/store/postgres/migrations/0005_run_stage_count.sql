-- stage_count keeps the number of a run's stages, so that a list of runs
-- need not read their plans.
ALTER TABLE runs ADD COLUMN stage_count INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET stage_count = coalesce(json_array_length(convert_from(plan, 'UTF8')::json -> 'stages'), 0)
WHERE plan IS NOT NULL;
