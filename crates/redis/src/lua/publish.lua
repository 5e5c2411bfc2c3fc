local stream, meta, chan, once = KEYS[1], KEYS[2], KEYS[3], KEYS[4] or ''
local payload, size, ttl, epoch, meta_ttl, once_ttl, field, pubcmd = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8]
if once ~= '' then
  local first = redis.call('hmget', once, 'o', 'e')
  if first[1] then return {tonumber(first[1]), first[2]} end
end
local offset = 0
if size > 0 then
  local known = redis.call('hget', meta, 'e')
  if known then epoch = known else redis.call('hset', meta, 'e', epoch) end
  offset = redis.call('hincrby', meta, 's', 1)
  redis.call('xadd', stream, 'MAXLEN', size, offset .. '-1', field, payload)
  redis.call('expire', stream, ttl)
  redis.call('expire', meta, meta_ttl)
else
  epoch = ''
end
local tag = 'p'
if field == 'c' then tag = 'c' end
redis.call(pubcmd, chan, tag .. offset .. ':' .. epoch .. ':' .. payload)
if once ~= '' then
  redis.call('hset', once, 'o', offset, 'e', epoch)
  redis.call('expire', once, once_ttl)
end
return {offset, epoch}
