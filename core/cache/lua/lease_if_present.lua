-- Lease a key only if it is cached, without sending its value (an amendment Redis makes itself:
-- append_to_page.lua reads the value where it lies). 1 when leased.
-- KEYS[1] the lease, KEYS[2] the key; ARGV[1] our token, ARGV[2] the lease TTL (ms).
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
