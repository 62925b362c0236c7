DROP TABLE message_topics;
DROP TABLE topics;
DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE users;
