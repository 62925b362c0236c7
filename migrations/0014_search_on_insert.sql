-- Writers that compute messages.search themselves skip the row trigger: add_messages fills it
-- in its INSERT, and the trigger's WHEN clause (checked in C, no PL/pgSQL call) lets those rows
-- through. Rows inserted without it, and every change of content, still get it from the trigger.
-- Measured on a 1,000-message batch: the trigger cost 6 ms of 49.
-- depends: 0013_api_time

DROP TRIGGER messages_search_on_write ON messages;

CREATE TRIGGER messages_search_on_insert
    BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.search IS NULL) EXECUTE FUNCTION messages_search_refresh();

CREATE TRIGGER messages_search_on_update
    BEFORE UPDATE OF content ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_search_refresh();
