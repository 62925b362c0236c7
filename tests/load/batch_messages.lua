-- wrk script: POST batches of FREYA_BATCH_SIZE messages (default 1000) to random conversations.
-- wrk -t1 -c4 -d10s -s tests/load/batch_messages.lua http://127.0.0.1:8000
local conversations = tonumber(os.getenv("FREYA_CONVERSATIONS") or "1000")
local size = tonumber(os.getenv("FREYA_BATCH_SIZE") or "1000")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local items = {}
for n = 1, size do
  local role = (n % 2 == 0) and "assistant" or "user"
  items[n] = '{"role": "' .. role .. '", "content": "batch message ' .. n ..
    ' with some ordinary words in it", "topics": ["batch"]}'
end
local body = '{"messages": [' .. table.concat(items, ", ") .. ']}'

request = function()
  return wrk.format(nil, "/v1/conversations/" .. math.random(1, conversations) .. "/messages/batch", nil, body)
end
