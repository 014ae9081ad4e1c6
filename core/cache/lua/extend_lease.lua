-- Keep a lease alive while its load runs, if it is still ours.
-- KEYS[1] the lease; ARGV[1] our token, ARGV[2] its new TTL (ms).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
