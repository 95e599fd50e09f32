package store

// TaskLeaseCheckParams names a task and the lease a request for it
// carries (an upload or download of the task's artifacts or cache).
type TaskLeaseCheckParams struct {
	TaskID     string
	DelegateID string
	LeaseToken string
}
