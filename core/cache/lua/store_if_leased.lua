-- Store a value only while our lease on its key is still there.
-- KEYS[1] the lease, KEYS[2] the key; ARGV[1] our token, ARGV[2] the value, ARGV[3] its TTL (s),
-- ARGV[4] "1": on a lost lease delete the key too (an amendment: the cached value may be older
-- than the write), anything else: leave it (a fill: whoever took the lease will store).
-- An invalidation in between deleted the lease, so a value loaded before it is never stored.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[2], KEYS[1])
end
return 0
