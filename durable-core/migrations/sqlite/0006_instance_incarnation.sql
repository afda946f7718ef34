-- The instance an id names now, told apart from an earlier one of the same
-- id (purged, or ended and started again): the id of its first execution.
-- A watcher that finds another one than the instance it followed stops,
-- instead of going on with the new instance's events. Rows written before
-- keep their current execution id, which is as good for them.
ALTER TABLE instances ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
UPDATE instances SET incarnation = execution_id;
