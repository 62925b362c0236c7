-- Nothing to undo here: 0007's rollback drops the column this fills.
DO $$ BEGIN NULL; END $$;
