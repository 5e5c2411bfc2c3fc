local stream, meta = KEYS[1], KEYS[2]
local epoch, from, limit, reverse, meta_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5]
if redis.call('hsetnx', meta, 'e', epoch) == 0 then
  epoch = redis.call('hget', meta, 'e')
end
-- A read keeps the position alive, as a publication does (history_meta_ttl).
redis.call('expire', meta, meta_ttl)
local top = redis.call('hget', meta, 's') or '0'
local ids, fields, payloads = {}, {}, {}
if limit ~= 0 then
  local entries
  local count = {}
  if limit > 0 then count = {'COUNT', limit} end
  if reverse then
    entries = redis.call('xrevrange', stream, '+', from, unpack(count))
  else
    entries = redis.call('xrange', stream, from, '+', unpack(count))
  end
  for i, e in ipairs(entries) do
    ids[i] = e[1]
    fields[i] = e[2][1]
    payloads[i] = e[2][2]
  end
end
return {epoch, top, ids, fields, payloads}
