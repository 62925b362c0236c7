-- wrk script: POST one message with a topic to a random conversation in [1, FREYA_CONVERSATIONS].
-- wrk -t1 -c16 -d10s -s tests/load/create_message.lua http://127.0.0.1:8000
local conversations = tonumber(os.getenv("FREYA_CONVERSATIONS") or "1000")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  local path = "/v1/conversations/" .. math.random(1, conversations) .. "/messages"
  local body = '{"role": "user", "content": "load test message ' .. math.random(1, 1000000000) ..
    ' about flights to lisbon", "topics": ["loadtest"]}'
  return wrk.format(nil, path, nil, body)
end
