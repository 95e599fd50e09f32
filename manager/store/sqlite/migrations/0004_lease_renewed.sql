-- A lease is renewed only by heartbeats that name its task: lease_renewed
-- is when it was given or last renewed (Unix nanoseconds), and a lease
-- not renewed for a lease TTL expires though its delegate lives. Leases
-- held when this column arrives count as renewed at their delegate's last
-- heartbeat.

ALTER TABLE tasks ADD COLUMN lease_renewed INTEGER NOT NULL DEFAULT 0;

UPDATE tasks SET lease_renewed = coalesce(
	(SELECT d.last_heartbeat FROM delegates d WHERE d.id = tasks.delegate_id), 0)
WHERE lease_token <> '' AND finished_at IS NULL;

CREATE INDEX tasks_lease ON tasks (lease_renewed) WHERE lease_token <> '' AND finished_at IS NULL;

-- Queued tasks that must follow a delegate: the sweep looks for those
-- whose delegate is gone (affinity_lost).
CREATE INDEX tasks_queued_affinity ON tasks (affinity) WHERE state = 'queued' AND affinity <> '';
