-- Token bucket, atomically: refill by elapsed time, then take `cost` tokens if there are enough.
-- KEYS[1]  bucket hash {tokens, ts}
-- ARGV[1]  capacity (points)      ARGV[2] window in ms (capacity refills over one window)
-- ARGV[3]  cost
-- Returns {allowed (0|1), retry_after_ms, remaining (floor)}.
-- The clock is the Redis server's, so every gateway instance shares one notion of time.
local capacity = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = capacity / window_ms

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end

local allowed = 0
local retry_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_ms = math.ceil((cost - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', ts)
-- An untouched bucket is full again after one window; drop it then.
redis.call('PEXPIRE', KEYS[1], math.ceil(window_ms) + 1000)
return {allowed, retry_ms, math.floor(tokens)}
