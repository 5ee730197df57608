-- Accept or reject a job offer atomically: only an offered porter, only before expiry, only once.
-- KEYS[1] = job:offer:{<offerId>}; ARGV: porterId, 'accept' | 'reject'
-- Returns {outcome, orderId, porterId...} where the porter ids are everyone the offer was made to.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'NOT_FOUND'}
end
local h = redis.call('HMGET', KEYS[1], 'orderId', 'expiresAt', 'state', 'p:' .. ARGV[1])
local order_id, expires_at, state, mine = h[1], tonumber(h[2]), h[3], h[4]
if not mine then
  return {'FORBIDDEN', order_id}
end
if state ~= 'open' or mine ~= 'offered' then
  return {'CONFLICT', order_id}
end
-- The server's clock, so gateways with skewed clocks agree on expiry.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= expires_at then
  return {'EXPIRED', order_id}
end
local result = {'ok', order_id}
if ARGV[2] == 'accept' then
  redis.call('HSET', KEYS[1], 'state', 'accepted', 'winner', ARGV[1], 'p:' .. ARGV[1], 'accepted')
else
  redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], 'rejected')
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'p:' then
    table.insert(result, string.sub(all[i], 3))
  end
end
return result
