DROP INDEX idx_message_system;
