ALTER TABLE topics DROP COLUMN search;
DROP TRIGGER messages_search_on_write ON messages;
DROP FUNCTION messages_search_refresh();
ALTER TABLE messages DROP COLUMN search;
DROP FUNCTION search_headline(text, tsquery);
DROP FUNCTION search_query(text);
DROP FUNCTION search_vector(text);
