-- The fingerprint of the call a work item is (a digest of the activity's
-- name and input, store::call_fingerprint): a result is stored for a work
-- item only if it comes from the same call, not from another call of the
-- same task that a turn never written had made. NULL for work items
-- written before: any call's result is taken for them, as before.
ALTER TABLE activities ADD COLUMN fingerprint INTEGER;
