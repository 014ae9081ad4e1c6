-- Append items to a cached page inside Redis, while our lease on its key is still there: the page
-- never crosses the wire, only the new items do.
-- The value is a Payload, {"etag":"<16 hex>","data":<page>}, and the page orjson's
-- {...,"<list>":[<item>,...],"has_more":<bool>,"next_before":<order>|null}, items oldest first,
-- each an object whose first field is its order ({"<order>":N,...}).
-- KEYS[1] the lease, KEYS[2] the key; ARGV[1] our token, ARGV[2] the TTL (s), ARGV[3] the page's
-- cap, ARGV[4] the list's field, ARGV[5] the order's field, then for each item (ascending) its
-- order and its JSON.
-- A value stamped with a version ({"version":"<16 hex>","etag":...}) keeps its stamp: the amended
-- page counts under the version the cached one was built under, no other.
-- Stores the page with the items in their place by order (mostly at its end; the oldest dropped
-- beyond the cap, has_more and next_before as a load would set them) under a new ETag (the body's
-- SHA1, as payload.py). An item older than a partial page's oldest is not on the page. A lost lease,
-- a key gone, a value of another shape, or an item already on the page: the key and its lease are
-- deleted, as any invalidation. 1 when stored.
local function drop()
  redis.call('DEL', KEYS[2], KEYS[1])
  return 0
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return drop() end
local value = redis.call('GET', KEYS[2])
if not value then return drop() end
local stamp = ''
if value:sub(1, 12) == '{"version":"' and value:sub(29, 30) == '",' then
  stamp = value:sub(2, 30)
  value = '{' .. value:sub(31)
end
local head, mid = '{"etag":"', '","data":'
local body_start = #head + 16 + #mid + 1
if value:sub(1, #head) ~= head or value:sub(#head + 17, body_start - 1) ~= mid or value:sub(-1) ~= '}' then
  return drop()
end
local body = value:sub(body_start, -2)
-- Inside a JSON string every '"' is escaped, so these (each holding a bare '"') only match the
-- page's own structure.
local _, open = body:find('"' .. ARGV[4] .. '":[', 1, true)
local close_mark = '],"has_more":'
local close = body:find(close_mark, 1, true)
if not open or not close or close < open then return drop() end
local more = body:sub(close + #close_mark):match('^(%a+),"next_before":%w+}$')
if more ~= 'true' and more ~= 'false' then return drop() end
local list = body:sub(open + 1, close - 1)
local starts_at
local item_mark = '{"' .. ARGV[5] .. '":'
-- The page's items and their orders, oldest first.
local items, orders, at = {}, {}, 1
while true do
  local found = list:find(item_mark, at, true)
  if not found then break end
  local order = tonumber(list:match('^(%d+)[,}]', found + #item_mark))
  if not order or (#orders > 0 and order <= orders[#orders]) then return drop() end
  if #items > 0 then items[#items] = list:sub(starts_at, found - 2) end  -- without the ','
  items[#items + 1], orders[#orders + 1], starts_at = true, order, found
  at = found + #item_mark
end
if #items == 0 and list ~= '' then return drop() end
if #items > 0 then items[#items] = list:sub(starts_at) end
local has_more = more == 'true'
for i = 6, #ARGV, 2 do
  local order = tonumber(ARGV[i])
  if not order then return drop() end
  -- Mostly the newest (a post); a reply whose message was followed by another lands before it.
  local place = #orders + 1
  while place > 1 and orders[place - 1] >= order do place = place - 1 end
  if orders[place] == order then return drop() end  -- already on the page: do not guess
  if not (place == 1 and has_more) then  -- older than a partial page's oldest: not on this page
    table.insert(items, place, ARGV[i + 1])
    table.insert(orders, place, order)
  end
end
local cap = tonumber(ARGV[3])
if not cap or cap < 1 then return drop() end
if #items > cap then
  items = {unpack(items, #items - cap + 1)}
  orders = {unpack(orders, #orders - cap + 1)}
  has_more = true
end
list = table.concat(items, ',')
local next_before = 'null'
if has_more then
  if #orders == 0 then return drop() end
  next_before = tostring(orders[1])
end
body = body:sub(1, open) .. list .. close_mark .. (has_more and 'true' or 'false') ..
  ',"next_before":' .. next_before .. '}'
redis.call('SET', KEYS[2], '{' .. stamp .. head:sub(2) .. redis.sha1hex(body):sub(1, 16) .. mid .. body .. '}', 'EX', ARGV[2])
redis.call('DEL', KEYS[1])
return 1
