-- Delete a key only if it still holds the value judged stale: a write that re-cached meanwhile wins.
-- KEYS[1] the key; ARGV[1] the value judged.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end
return 0
