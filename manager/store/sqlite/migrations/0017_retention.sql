-- Retention: objects queued for deletion (deleted after the records that
-- named them, retried until gone), the locks that let one manager of
-- several clean at a time, and what a sealed log's objects take.
CREATE TABLE object_deletions (
	key       TEXT PRIMARY KEY,
	kind      TEXT NOT NULL,
	queued_at INTEGER NOT NULL
);
CREATE INDEX object_deletions_queued ON object_deletions (queued_at, key);

CREATE TABLE store_locks (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at INTEGER NOT NULL
);

ALTER TABLE tasks ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN log_object_count INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET
	log_bytes = coalesce((SELECT sum(json_extract(value, '$.size')) FROM json_each(log_objects)), 0),
	log_object_count = coalesce((SELECT count(*) FROM json_each(log_objects)), 0)
WHERE log_sealed = 1 AND log_objects <> '' AND json_valid(log_objects) AND json_type(log_objects) = 'array';
