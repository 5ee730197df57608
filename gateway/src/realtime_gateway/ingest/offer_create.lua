-- Record a job offer for one porter. KEYS[1] = job:offer:{<offerId>}
-- ARGV: orderId, porterId, expiresAtMs, graceMs
redis.call('HSETNX', KEYS[1], 'orderId', ARGV[1])
redis.call('HSETNX', KEYS[1], 'state', 'open')
redis.call('HSET', KEYS[1], 'expiresAt', ARGV[3])
redis.call('HSETNX', KEYS[1], 'p:' .. ARGV[2], 'offered')
-- Kept a little past expiry so a late answer is told EXPIRED rather than NOT_FOUND.
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]))
return 1
