-- messages.role (user, assistant, system, tool), added the guide's way for a table with data:
-- depends: 0002_guide_indexes
-- 1. add it nullable (a catalogue change, no rewrite), 2. give existing rows 'user',
-- 3. set NOT NULL. The CHECK keeps the column to the four roles.
-- lock_timeout: if a long transaction holds messages, fail fast instead of queueing every
-- reader behind our ACCESS EXCLUSIVE request; rerun the migration when it is quiet.

SET LOCAL lock_timeout = '10s';
ALTER TABLE messages ADD COLUMN role text;
UPDATE messages SET role = 'user' WHERE role IS NULL;
ALTER TABLE messages ALTER COLUMN role SET NOT NULL;
ALTER TABLE messages ADD CONSTRAINT messages_role_check
    CHECK (role IN ('user', 'assistant', 'system', 'tool'));
