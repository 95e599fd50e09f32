-- Approval gates are in the task state machine: a gate (approvals > 0)
-- whose dependencies are met waits in state 'waiting' until it has
-- approvals distinct approvers (approved), then succeeds. Gates stored
-- before (type errand.approval, queued, or leased by the manager's own
-- approval delegate) become such gates: their count of approvers comes
-- from their data, their approvals so far from run_approvals.

ALTER TABLE tasks ADD COLUMN approvals INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN approved INTEGER NOT NULL DEFAULT 0;

UPDATE tasks t SET
	approvals = greatest(coalesce((convert_from(t.data, 'UTF8')::jsonb ->> 'approvers')::integer, 1), 1),
	approved = (SELECT count(*) FROM run_approvals a
		WHERE a.run_id = t.run_id AND a.stage = convert_from(t.data, 'UTF8')::jsonb ->> 'stage')
WHERE t.type = 'errand.approval' AND t.finished_at IS NULL AND t.data IS NOT NULL;

-- A gate the manager had queued, or leased to itself, waits; one that has
-- its approvers already succeeds, at the time of its last approval.
UPDATE tasks t SET
	state = CASE WHEN t.approved >= t.approvals THEN 'succeeded' ELSE 'waiting' END,
	finished_at = CASE WHEN t.approved >= t.approvals THEN coalesce((SELECT max(a.approved_at) FROM run_approvals a
		WHERE a.run_id = t.run_id AND a.stage = convert_from(t.data, 'UTF8')::jsonb ->> 'stage'), t.created_at) END,
	lease_token = '', delegate_id = '', delegate_group = '', lease_renewed = 0
WHERE t.type = 'errand.approval' AND t.approvals > 0 AND t.state IN ('queued', 'leased', 'running');

-- The stage a succeeded gate opens (its initialize task depends on the
-- gate alone, on_success) is queued.
UPDATE tasks t SET state = 'queued', queued_at = (SELECT max(g.finished_at) FROM task_deps d JOIN tasks g ON g.id = d.dep_id
		WHERE d.task_id = t.id)
WHERE t.state = 'pending'
	AND EXISTS (SELECT 1 FROM task_deps d JOIN tasks g ON g.id = d.dep_id
		WHERE d.task_id = t.id AND g.type = 'errand.approval' AND g.approvals > 0 AND g.state = 'succeeded')
	AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks g ON g.id = d.dep_id
		WHERE d.task_id = t.id AND NOT (g.state = 'succeeded' AND d.condition = 'on_success'));

-- The manager no longer leases gates to a delegate of its own.
DELETE FROM delegates WHERE id = 'manager-approvals';
