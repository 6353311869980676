-- Consistency check for `airlock restore --drill --check FILE`, in the form every
-- check takes: one query, run against the restored copy of the app's database, that
-- returns one row per inconsistency and no row when the data is consistent.
--
-- The reference app's: every export job has the row of its stored object. (Whether
-- the object itself is in the bucket cannot be checked from a database copy.)
SELECT e.id, e.name
FROM exports e
LEFT JOIN export_objects o ON o.export_id = e.id
WHERE o.id IS NULL
ORDER BY e.id;
