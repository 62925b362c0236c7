-- Nothing to undo here: message_topic_ids' rollback drops the column this fills.
DO $$ BEGIN NULL; END $$;
