DROP TRIGGER messages_search_on_update ON messages;
DROP TRIGGER messages_search_on_insert ON messages;

CREATE TRIGGER messages_search_on_write
    BEFORE INSERT OR UPDATE OF content ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_search_refresh();
