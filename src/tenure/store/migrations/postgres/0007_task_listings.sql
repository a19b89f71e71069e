-- Reading a board with a long history (its done tasks only ever grow:
-- retention keeps tasks) without reading all of it.
--
-- A listing's pages, in creation order: each page starts where the one
-- before ended, at the cost of the first. Its key never changes, but an
-- update that cannot be HOT (a claim, a completion) adds an entry here as it
-- does to every index of the table.
CREATE INDEX tasks_by_creation ON tasks (board_id, created_at, id);
-- The done tasks completed last, newest first, as the dashboard shows them.
-- Partial: a task enters it once, when it is done.
CREATE INDEX tasks_done_recently ON tasks (board_id, completed_at, id)
    WHERE status = 'done';
