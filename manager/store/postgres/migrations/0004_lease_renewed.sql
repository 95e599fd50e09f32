-- A lease is renewed only by heartbeats that name its task: lease_renewed
-- is when it was given or last renewed (Unix nanoseconds), and a lease
-- not renewed for a lease TTL expires though its delegate lives. Leases
-- held when this column arrives count as renewed at their delegate's last
-- heartbeat.

ALTER TABLE tasks ADD COLUMN lease_renewed BIGINT NOT NULL DEFAULT 0;

UPDATE tasks t SET lease_renewed = d.last_heartbeat
FROM delegates d
WHERE d.id = t.delegate_id AND t.state IN ('leased', 'running');

CREATE INDEX tasks_lease ON tasks (lease_renewed) WHERE state IN ('leased', 'running');

-- Queued tasks that must follow a delegate: the sweep looks for those
-- whose delegate is gone (affinity_lost).
CREATE INDEX tasks_queued_affinity ON tasks (affinity) WHERE state = 'queued' AND affinity <> '';
