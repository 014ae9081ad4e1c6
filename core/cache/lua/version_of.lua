-- The version a fill stamps its value with: the scope's current one, or, when the version key is
-- missing (a write deleted it, eviction, a restart), a new one stored in its place.
-- KEYS[1] the version key; ARGV[1] a new random version. Returns the version.
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
