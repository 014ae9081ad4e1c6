-- Lease a key only if it is cached, and return its value with the lease (an amendment's start):
-- a key that is not cached has nothing to amend, and a lease on it would only make readers wait.
-- KEYS[1] the lease, KEYS[2] the key; ARGV[1] our token, ARGV[2] the lease TTL (ms).
local value = redis.call('GET', KEYS[2])
if value and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return value end
return false
