-- Nothing to undo here: 0140's rollback drops the columns this fills.
DO $$ BEGIN NULL; END $$;
