-- wrk script: GET /v1/messages/{id} for random ids in [1, FREYA_MAX_MESSAGE_ID].
-- wrk -t1 -c16 -d10s -s tests/load/message_by_id.lua http://127.0.0.1:8000
local max_id = tonumber(os.getenv("FREYA_MAX_MESSAGE_ID") or "1000000")

request = function()
  return wrk.format("GET", "/v1/messages/" .. math.random(1, max_id))
end
