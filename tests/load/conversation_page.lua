-- wrk script: GET /v1/conversations/{id}/messages?limit=50 for random ids in [1, FREYA_CONVERSATIONS].
-- wrk -t1 -c16 -d10s -s tests/load/conversation_page.lua http://127.0.0.1:8000
local conversations = tonumber(os.getenv("FREYA_CONVERSATIONS") or "1000")

request = function()
  return wrk.format("GET", "/v1/conversations/" .. math.random(1, conversations) .. "/messages?limit=50")
end
