-- Topic autocomplete: name prefixes as a range scan. The unique idx_topic_name follows the
-- database collation, which cannot serve prefix ranges unless it is "C"; text_pattern_ops
-- compares bytes, so "trav" … "trav\U0010FFFF" is one index range under any collation.
-- depends: 0010_topic_search_index
-- transactional: false

CREATE INDEX CONCURRENTLY idx_topic_name_prefix ON topics (name text_pattern_ops);
