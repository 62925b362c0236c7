-- btree_gin: GIN operator classes for plain scalars, so one GIN index can hold messages.user_id and
-- messages.conversation_id beside messages.search (0016). PostgreSQL ships it in contrib and marks
-- it trusted: the database owner may create it.
-- depends: 0014_search_on_insert

CREATE EXTENSION IF NOT EXISTS btree_gin;
