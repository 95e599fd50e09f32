-- Retention: objects queued for deletion (deleted after the records that
-- named them, retried until gone), the locks that let one manager of
-- several clean at a time, and what a sealed log's objects take.
CREATE TABLE object_deletions (
	key       TEXT PRIMARY KEY,
	kind      TEXT NOT NULL,
	queued_at BIGINT NOT NULL
);
CREATE INDEX object_deletions_queued ON object_deletions (queued_at, key);

CREATE TABLE store_locks (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at BIGINT NOT NULL
);

ALTER TABLE tasks ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN log_object_count BIGINT NOT NULL DEFAULT 0;
UPDATE tasks SET
	log_bytes = coalesce((SELECT sum((e ->> 'size')::bigint) FROM jsonb_array_elements(log_objects::jsonb) e), 0),
	log_object_count = coalesce((SELECT count(*) FROM jsonb_array_elements(log_objects::jsonb) e), 0)
WHERE log_sealed AND log_objects LIKE '[%';
