-- Claims a batch of event ids at once: SET <key> 1 NX EX <ttl> for every key, in order.
-- KEYS: event:seen:{eventId} per event. ARGV[1]: TTL in seconds.
-- Returns 1 per key claimed now, 0 per key claimed before (a duplicate).
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
