ALTER TABLE messages
    ALTER COLUMN metadata DROP NOT NULL,
    ALTER COLUMN token_count DROP NOT NULL,
    ALTER COLUMN token_count_estimated DROP NOT NULL;
ALTER TABLE conversations ALTER COLUMN metadata DROP NOT NULL;
