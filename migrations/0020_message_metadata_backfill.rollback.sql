-- Nothing to undo here: message_metadata_columns' rollback drops the columns this fills.
DO $$ BEGIN NULL; END $$;
